"""Error messages for people: one line, naming what failed."""


def first_line(exc):
    """The first line of an exception's message (its type name if the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
