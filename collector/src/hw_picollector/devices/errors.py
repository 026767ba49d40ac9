"""What can go wrong talking to a device, each with a short machine ``state`` for status reports.

Every message is one line naming the device serial and the URL, e.g.
``3c39e7aabbcc at http://192.168.1.59/api/v1/data: cannot connect: Connection refused``.
A device can put any text into it (an error body, a serial): the detail is cut to
``MAX_DETAIL_CHARS`` and cleared of control characters before it reaches ``last_error``, the
status file or the journal.
"""

from __future__ import annotations

from hw_picollector.catalog import DeviceState

MAX_DETAIL_CHARS = 300


def printable(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` on one line of at most ``limit`` characters (``…`` where it was cut): runs of
    white space become one space, other control and format characters (terminal escapes,
    NUL, bidirectional overrides, ...) ``?``."""
    text = " ".join(text[:limit * 4].split())
    if not text.isprintable():
        text = "".join(c if c.isprintable() or c == " " else "?" for c in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class DeviceError(Exception):
    """Base class: ``.serial``, ``.url``, ``.state`` (e.g. ``"timeout"``) and ``.detail``.

    ``state`` is a ``DeviceState`` or, for an unexpected HTTP status, ``http_<status>``.
    """

    state: str = DeviceState.ERROR

    def __init__(self, serial: str, url: str, detail: str, state: str | None = None) -> None:
        self.serial, self.url, self.detail = serial, url, printable(detail)
        if state is not None:
            self.state = state
        super().__init__(f"{serial} at {url}: {self.detail}")


class Unreachable(DeviceError):
    """No connection or no answer in time (state ``unreachable`` or ``timeout``)."""

    state = DeviceState.UNREACHABLE


class ApiDisabled(DeviceError):
    """API v1 answered 403 (error id 202): the Local API toggle is off."""

    state = DeviceState.API_DISABLED

    def __init__(self, serial: str, url: str, detail: str = "", state: str | None = None) -> None:
        super().__init__(serial, url, detail or (
            "the local API is disabled (HTTP 403); re-enable it in the HomeWizard app: "
            "Settings → Meters → the meter → Local API"), state)


class Unauthorized(DeviceError):
    """API v2 token missing or refused (401)."""

    state = DeviceState.UNAUTHORIZED


class SerialMismatch(DeviceError):
    """The address answers as another device; ``.actual`` is the serial it reported."""

    state = DeviceState.SERIAL_MISMATCH

    def __init__(self, serial: str, url: str, actual: str, product_type: str = "") -> None:
        self.actual = printable(actual, 64)
        what = f"{actual} ({product_type})" if product_type else actual
        super().__init__(serial, url, f"the device there is serial {what}, not {serial}; "
                         "the address now belongs to another device (DHCP/mDNS change?)")


class InvalidResponse(DeviceError):
    """An answer that is not the expected JSON, or an unexpected HTTP status (``http_<code>``)."""

    state = DeviceState.INVALID_RESPONSE


class TlsError(DeviceError):
    """The TLS handshake or the certificate check failed (wrong CA, serial or type)."""

    state = DeviceState.TLS_ERROR


class PairingTimeout(DeviceError):
    """Nobody pressed the device button before the pairing deadline."""

    state = DeviceState.PAIR_TIMEOUT


class PairingRefused(DeviceError):
    """The device refused to create a user (``user:no-storage``, ``user:name-invalid``, ...)."""

    state = DeviceState.PAIR_REFUSED
