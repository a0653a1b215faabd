"""User-facing errors: printed as one paragraph, no traceback, non-zero exit."""


class UserError(Exception):
    """Bad input that the user can fix: a file, key, column or row is wrong."""

    exit_code = 2
