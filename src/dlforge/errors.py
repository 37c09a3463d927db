"""User-facing errors: each one is a single clear line, and the CLI exits with code 2."""


class DlforgeError(Exception):
    """Bad input from the user (spec, data, run directory). The message is shown as is."""


class SpecError(DlforgeError):
    """The spec is invalid: the message names the file, line, field path and bad value."""


class DataError(DlforgeError):
    """The data cannot be read: the message names the file (and row or line where known)."""


class RunError(DlforgeError):
    """A run directory is missing, incomplete or unreadable."""
