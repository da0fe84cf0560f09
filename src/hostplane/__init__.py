"""hostplane: a hosting control plane.

One panel (HTTP + WebSocket API) owns all state; one agent per node runs the
servers. Both live in this package.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hostplane")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
