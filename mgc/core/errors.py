"""The one base of every error a user can act on (bad config, bad data, bad audio, bad usage).

A command prints such an error as one line and exits with status 2 (`mgc.core.cli`); anything
else is a bug and keeps its traceback. Each floor subclasses it for its own domain, so the command
line needs nothing from the floors above it to know what to print.
"""


class UserError(Exception):
    """Something the user can fix: the message names the file or option and the reason."""
