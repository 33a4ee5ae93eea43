"""The one error type for a user's mistake, and how scripts report it."""

import signal
import sys


class PipelineError(Exception):
    """A problem with the user's input that has a clear fix; scripts print
    the message and exit with status 2 instead of a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: joblib stops its worker processes and
    temporary files are removed on the way out."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run_script(main):
    """Run a script's ``main()``; turn PipelineError into a one-line message
    and exit status 2 instead of a traceback. SIGTERM ends the run (and its
    worker processes) as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        status = main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        print("interrupted; files from earlier runs are untouched", file=sys.stderr)
        sys.exit(143 if isinstance(err, Terminated) else 130)
    except OSError as err:  # a full disk, a read-only folder: say which, not where in the code
        print(f"error: {err}; files from earlier runs are untouched", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
