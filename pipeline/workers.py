"""Worker processes, for every place that runs them (feature extraction,
augmented copies, windows, cross-validation folds, calibration streams):
how many to start, and a watchdog so none outlives the run."""

import os
import threading
import time

_watchdog_started = False


def worker_count(jobs, tasks):
    """How many worker processes ``jobs`` (-1: one per core) asks for, but
    never more than there are ``tasks``: --jobs=64 for 12 clips starts 12."""
    cores = os.cpu_count() or 1
    wanted = cores + 1 + jobs if jobs < 0 else jobs  # joblib's meaning of negative values
    return max(1, min(wanted, tasks))


def exit_with_parent(parent_pid, interval_s=1.0):
    """In a worker process: exit as soon as ``parent_pid`` is no longer our
    parent (it was killed, even with SIGKILL, and we were re-parented), so
    no worker outlives the run. Started once per process."""
    global _watchdog_started
    if os.getpid() == parent_pid or _watchdog_started:  # in the run's own process, or set
        return
    if os.getppid() != parent_pid:  # the run died before this task reached us
        os._exit(1)
    _watchdog_started = True

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
