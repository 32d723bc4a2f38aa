"""The one exception type that means "bad input from the user" (CLI: one line, exit code 2)."""


class UsageError(ValueError):
    """Bad input from the user: one line, exit code 2."""
