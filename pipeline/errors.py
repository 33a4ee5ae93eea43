"""The one error type for a user's mistake, and how scripts report it."""

import sys


class PipelineError(Exception):
    """A problem with the user's input that has a clear fix; scripts print
    the message and exit with status 2 instead of a traceback."""


def run_script(main):
    """Run a script's ``main()``; turn PipelineError into a one-line message
    and exit status 2 instead of a traceback."""
    try:
        status = main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; files from earlier runs are untouched", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
