"""The one exception type for *expected* failures (bad input, bad params, missing files).

The CLI prints `str(err)` as a single line and exits non-zero without a traceback; anything else
is a bug and keeps its traceback.
"""


class RealmError(Exception):
    """An expected, user-facing error. The message names the file or key and the problem."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can be pages long), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
