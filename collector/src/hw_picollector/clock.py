"""Is the system clock trustworthy? A Pi has no RTC: no sample is stamped before it is.

Policy (config key ``clock_sync``):
- ``wait``: synchronised only once the time-sync marker file exists
  (systemd-timesyncd's ``/run/systemd/timesync/synchronized`` by default);
- ``trust``: always synchronised (a machine with an RTC, or a test);
- ``auto`` (default): inside a container, which shares its host's clock and can never run
  a time-sync service of its own, trusted; elsewhere synchronised when the marker exists or
  the kernel's NTP state (adjtimex) says so (chrony, ntpd).
"""

from __future__ import annotations

import os
from pathlib import Path

TIME_ERROR = 5


def in_container() -> bool:
    if Path("/run/systemd/container").exists():
        return True
    try:
        return b"container=" in Path("/proc/1/environ").read_bytes()
    except OSError:
        return False


def kernel_synchronised() -> bool:
    """adjtimex(2) in read-only mode: TIME_ERROR means the kernel clock is unsynchronised."""
    import ctypes  # only here: loading ctypes costs the collector's start-up time
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return False
    return bool(state >= 0 and state != TIME_ERROR)


def clock_state(policy: str, marker: str) -> tuple[bool, str]:
    """(synchronised, how we know) under the configured policy."""
    if policy == "trust":
        return True, "trusted by config (clock_sync: trust)"
    if policy == "auto" and in_container():
        return True, "container: shares the host clock"
    if marker and os.path.exists(marker):
        return True, f"time-sync marker {marker}"
    if policy == "auto" and kernel_synchronised():
        return True, "kernel NTP state synchronised"
    return False, f"waiting for time synchronisation (marker {marker})"
