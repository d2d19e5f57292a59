"""node-exporter-ml: a node agent for GPU inference fleets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("node-exporter-ml")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
