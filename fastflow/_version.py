"""The package version, a leaf module (the server and the client read it
without importing the package face)."""

__version__ = "0.1.0"
