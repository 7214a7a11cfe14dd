"""The one exception type for bad user input.

Entry scripts catch :class:`UserError`, print its message as a single line and exit with status 2
before any work starts (DESIGN.md §2). Library code raises it wherever a value that came from the
user (a flag, a file) is unusable, so the message must name the flag or file, the value, and what
is accepted.
"""


class UserError(Exception):
    """A problem with the user's input; reported as one line, exit status 2."""
