"""Errors meant for the operator: each says what was wrong, where, and what to do."""


class UserError(Exception):
    """A problem with the operator's input or environment; the CLI prints it without a traceback."""

    exit_code = 1
