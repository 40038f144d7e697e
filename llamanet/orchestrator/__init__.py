"""See the module docstrings; this package re-exports nothing."""
