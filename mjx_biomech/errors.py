"""The one exception for bad input."""


class InputError(ValueError):
    """Bad input: the message names the file (or argument), the element or line, and what was expected."""
