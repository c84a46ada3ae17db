"""User-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""


class UserError(Exception):
    """Bad input from the user (missing file, unsupported URL, wrong model...). Message is shown as is."""

    exit_code = 2


class SourceError(UserError):
    """A video source cannot be opened or read."""
