"""mdm: Mobile Device Management service."""

__version__ = "0.1.0"
