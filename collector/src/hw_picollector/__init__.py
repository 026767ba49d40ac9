"""hw-picollector: HomeWizard meters to a durable local store, then exactly once to Cassandra."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One version, the package's own (collector/pyproject.toml): the wheel, `hwpc --version`,
    # the heartbeat, the status file and the User-Agent all read it.
    __version__ = version("hw-picollector")
except PackageNotFoundError:  # a source tree on sys.path without an installed distribution
    __version__ = "0+unknown"
