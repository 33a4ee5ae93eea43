"""Feature extraction for many clips: in parallel (local processes or a Dask
cluster), in order, reusing a cache of unchanged files."""

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import features
from features import Extracted
from pipeline import content_cache
from pipeline.errors import PipelineError
from pipeline.workers import exit_with_parent, worker_count


# ----------------------------------------------------------------------------
# The cache: features of a file keyed by its content (a hash of its bytes),
# valid for one feature configuration and clip length limit. Content, not
# path/size/mtime: two fixed-length clips swapped between class folders with
# timestamps restored by an archive look unchanged to stat(), not to a hash.

def cache_path(dataset):
    """The cache file that belongs to a dataset file."""
    dataset = Path(dataset)
    return dataset.with_name(dataset.stem + "_cache.npz")


def _cache_identity(config, max_seconds):
    return json.dumps({"features": config.to_dict(), "max_clip_s": max_seconds}, sort_keys=True)


def load_cache(path, config, max_seconds=None):
    """Dict key -> Extracted; empty when the cache is missing, unreadable or
    made with another feature configuration or clip length limit."""
    rows, extra = content_cache.load_rows(path, _cache_identity(config, max_seconds),
                                          width=config.n_features,
                                          columns=("durations", "reasons"))
    return {key[0]: Extracted(None if reason else row, float(duration), str(reason))
            for (key, row), duration, reason in zip(rows.items(), extra["durations"],
                                                    extra["reasons"])}


def save_cache(path, config, entries, max_seconds=None):
    """Write ``entries`` (key -> Extracted) for ``config``, atomically."""
    keys = sorted(entries)
    content_cache.save_rows(
        path, _cache_identity(config, max_seconds),
        {(k,): entries[k].vector if entries[k].vector is not None
         else np.zeros(config.n_features, np.float32) for k in keys},
        width=config.n_features,
        durations=np.asarray([entries[k].duration_s for k in keys], dtype=np.float64),
        reasons=np.asarray([entries[k].reason for k in keys], dtype=str))


# ----------------------------------------------------------------------------
# Extraction: in parallel, in order, one small result per clip.

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
        :func:`pipeline.content_cache.file_key` of each path, when the caller has them already
        (each file is then hashed once).

    Returns
    -------
    list of Extracted, one per path, and the cache for these paths only
    (so the cache forgets deleted and changed files).
    """
    if task_clips < 1:
        raise PipelineError(f"--task_clips must be at least 1, got {task_clips}")
    cache = dict(cache or {})
    keys = keys if keys is not None else [content_cache.file_key(p) for p in paths]
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
