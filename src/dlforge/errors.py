"""User-facing errors: each one is a single clear line, and the CLI exits with code 2."""


class DlforgeError(Exception):
    """Bad input from the user (spec, data, run directory). The message is shown as is."""


class SpecError(DlforgeError):
    """The spec is invalid: the message names the file, line, field path and bad value."""


class DataError(DlforgeError):
    """The data cannot be read: the message names the file (and row or line where known)."""


class RunError(DlforgeError):
    """A run directory is missing, incomplete or unreadable."""


class InputError(DlforgeError):
    """One request's input is unusable: `field` names where (e.g. `instances[2]`); `status` is the HTTP answer
    (400 malformed, 413 over a limit)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.status = field, status


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (libraries' errors often run to many lines), or its type's name."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def listed(names: list[str], limit: int = 10) -> str:
    """The first `limit` of `names`, quoted and comma-separated, then "and N more": a list that keeps an error to one
    readable line however long it is."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
