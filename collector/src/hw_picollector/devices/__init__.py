"""HomeWizard devices.

- ``canonical``: payload → canonical sample (pure); ``errors``: the DeviceError hierarchy;
- ``tls``: the HomeWizard CA and ``appliance/<id>/<serial>`` names;
- ``client``: ``DeviceClient`` (v1 HTTP / v2 HTTPS) over ``transport`` (one keep-alive
  HTTP/1.1 connection per device); ``pair``: v2 token creation.

Only the light modules are re-exported here, so ``import hw_picollector.devices`` stays cheap
(``client``, ``transport`` and ``pair`` pull in sockets and ssl).
"""

from hw_picollector.devices.canonical import ALL_COLUMNS, TEXT_COLUMNS, Sample, columns, to_sample
from hw_picollector.devices.errors import (
    ApiDisabled,
    DeviceError,
    InvalidResponse,
    PairingRefused,
    PairingTimeout,
    SerialMismatch,
    TlsError,
    Unauthorized,
    Unreachable,
)

__all__ = [
    "ALL_COLUMNS",
    "TEXT_COLUMNS",
    "ApiDisabled",
    "DeviceError",
    "InvalidResponse",
    "PairingRefused",
    "PairingTimeout",
    "Sample",
    "SerialMismatch",
    "TlsError",
    "Unauthorized",
    "Unreachable",
    "columns",
    "to_sample",
]
