"""The error every command turns into one line and exit status 2: a problem the user can fix from
the command line (a flag, a path, an input that cannot be used). Stages raise it, or their own
errors that their command turns into it; `clipdata` (pipeline/cli.py) prints it without a
traceback. In the foundation, so no stage imports another stage's CLI for it."""


class UsageError(Exception):
    """A problem the user can fix from the command line; printed without a traceback."""
