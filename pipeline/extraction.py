"""Feature extraction for many clips: in parallel (local processes or a Dask
cluster), in order, reusing a cache of unchanged files."""

import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import features
from features import Extracted
from pipeline.errors import PipelineError
from pipeline.files import file_digest, write_npz


# ----------------------------------------------------------------------------
# The cache: features of a file keyed by its content (a hash of its bytes),
# valid for one feature configuration and clip length limit. Content, not
# path/size/mtime: two fixed-length clips swapped between class folders with
# timestamps restored by an archive look unchanged to stat(), not to a hash.

def cache_path(dataset):
    """The cache file that belongs to a dataset file."""
    dataset = Path(dataset)
    return dataset.with_name(dataset.stem + "_cache.npz")


def file_key(path):
    """A hash of the file's bytes (BLAKE2b, 128 bits), or None when it
    cannot be read; bench/bench_dataset.py measures its cost."""
    if not os.path.isfile(path):
        return None  # missing, or a device or FIFO: never read (the extraction names it)
    try:
        return file_digest(path, hashlib.blake2b(digest_size=16))
    except OSError:
        return None


def _cache_identity(config, max_seconds):
    return json.dumps({"features": config.to_dict(), "max_clip_s": max_seconds}, sort_keys=True)


def load_cache(path, config, max_seconds=None):
    """Dict key -> Extracted; empty when the cache is missing, unreadable or
    made with another feature configuration or clip length limit."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["config"]) != _cache_identity(config, max_seconds):
                return {}
            keys, vectors = npz["keys"], npz["features"]
            if (vectors.ndim != 2 or vectors.shape != (len(keys), config.n_features)
                    or len(npz["durations"]) != len(keys) or len(npz["reasons"]) != len(keys)):
                return {}  # tampered or damaged: extract again rather than trust it
            rows = zip(keys, vectors, npz["durations"], npz["reasons"])
            return {str(k): Extracted(None if r else v, float(d), str(r))
                    for k, v, d, r in rows}
    except Exception:  # a missing or damaged cache only costs time
        return {}


def save_cache(path, config, entries, max_seconds=None):
    """Write ``entries`` (key -> Extracted) for ``config``, atomically."""
    width = config.n_features
    keys = sorted(entries)
    write_npz(
        path, config=np.asarray(_cache_identity(config, max_seconds)),
        keys=np.asarray(keys, dtype=str),
        features=np.stack([entries[k].vector if entries[k].vector is not None
                           else np.zeros(width, np.float32) for k in keys]
                          ) if keys else np.zeros((0, width), np.float32),
        durations=np.asarray([entries[k].duration_s for k in keys], dtype=np.float64),
        reasons=np.asarray([entries[k].reason for k in keys], dtype=str))


# ----------------------------------------------------------------------------
# Extraction: in parallel, in order, one small result per clip.

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


def extract_task(paths, config, max_seconds, parent_pid):
    """One local parallel task: :func:`features.extract_many`, in a worker
    that ends itself when the run's process dies."""
    exit_with_parent(parent_pid)
    return features.extract_many(paths, config, max_seconds)

@contextmanager
def parallel_backend(backend, scheduler, jobs):
    """joblib's backend for ``backend``; yields the n_jobs to use with it."""
    import joblib
    if backend == "local":
        yield jobs
        return
    if backend != "dask":
        raise PipelineError(f"--backend={backend!r}: expected 'local' or 'dask'")
    from pipeline import dask_backend
    with dask_backend.client(scheduler, jobs):
        with joblib.parallel_config(backend="dask", wait_for_workers_timeout=60):
            yield -1


def extract_all(paths, config, *, jobs=-1, backend="local", scheduler=None, cache=None,
                task_clips=16, max_seconds=None, keys=None):
    """Features for every path, in order, reusing ``cache`` entries.

    Parameters
    ----------
    paths : list of str
    config : features.FeatureConfig
    jobs : int
        Worker processes (-1 = all cores, 1 = none beside this one).
    backend, scheduler : str, str or None
        "local" or "dask", and the Dask scheduler address (None = a local cluster).
    cache : dict, optional
        key -> Extracted from :func:`load_cache`.
    task_clips : int
        Clips per parallel task. joblib dispatches at most two tasks per
        worker ahead of the results it has handed back.
    max_seconds : float, optional
        Longer files are skipped with a reason, unread.
    keys : list of str or None, optional
        :func:`file_key` of each path, when the caller has them already
        (each file is then hashed once).

    Returns
    -------
    list of Extracted, one per path, and the cache for these paths only
    (so the cache forgets deleted and changed files).
    """
    if task_clips < 1:
        raise PipelineError(f"--task_clips must be at least 1, got {task_clips}")
    cache = dict(cache or {})
    keys = keys if keys is not None else [file_key(p) for p in paths]
    todo = [i for i, k in enumerate(keys) if k is None or k not in cache]
    results = {}
    if todo:
        import joblib
        from pipeline.progress import Progress
        jobs = worker_count(jobs, -(-len(todo) // task_clips)) if backend == "local" else jobs
        with parallel_backend(backend, scheduler, jobs) as n_jobs:
            parallel = joblib.Parallel(n_jobs=n_jobs, return_as="generator",
                                       pre_dispatch="2*n_jobs")
            progress = Progress(len(todo), "features", "clip")
            tasks = [todo[i:i + task_clips] for i in range(0, len(todo), task_clips)]
            # Dask workers get features.extract_many itself (this package is not on
            # them); local workers get the task that also watches this process.
            calls = ((joblib.delayed(features.extract_many)([paths[i] for i in task], config,
                                                            max_seconds)
                      if backend == "dask" else
                      joblib.delayed(extract_task)([paths[i] for i in task], config,
                                                   max_seconds, os.getpid()))
                     for task in tasks)
            for task, task_results in zip(tasks, parallel(calls)):
                for i, result in zip(task, task_results):
                    results[i] = result
                    if keys[i] is not None:
                        cache[keys[i]] = result
                progress.update(len(task))
            progress.close()
    ordered = [results[i] if i in results else cache[keys[i]] for i in range(len(paths))]
    return ordered, {k: cache[k] for k in keys if k is not None}
