"""Strategy Worker: the execution engine of the AIPX trading platform."""

__version__ = "0.1.0"
