"""The one user-error type: bad input that the user can fix (a flag, a file, a missing download).

Every command line turns a ``UserError`` into one message and exit status 2, without a traceback
(``cli/common.py``). It subclasses ValueError, so library callers may catch either.
"""


class UserError(ValueError):
    """Bad input a user can fix; the message says what is wrong and how to fix it."""
