"""The version, read by the package face and by every writer that records it (one place)."""

__version__ = "0.1.0"
