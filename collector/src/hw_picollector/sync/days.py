"""The UTC days of the store's day files: when one starts, and when it is closed.

A day file holds one UTC day. Once a day has been over for ``CLOSED_AFTER`` it gets no more
rows: its checkpoint may be marked complete (stream.py) and its ``site_power`` is final
(derived.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

CLOSED_AFTER = timedelta(hours=1)  # a UTC day gets no more rows this long after it ended
DAY_S = 86400


def day_start_s(day: str) -> int:
    return int(datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp())


def day_closed(day: str, now_s: float) -> bool:
    return now_s >= day_start_s(day) + DAY_S + CLOSED_AFTER.total_seconds()
