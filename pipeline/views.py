"""Every window of every clip: the patches predict.py classifies.

predict.py decides a clip longer than a window by the mean of its windows'
probabilities (``WINDOW_S`` every ``HOP_S``, each window's own features:
for the patch presets, the loudest patch within it), and a shorter clip by
its own features. Training on those same windows (train_16k's
``EVERY_PATCH``) shows the model every part of a clip, not only its loudest
patch, and deciding test clips by their windows measures what predict.py
does.

Rows are computed once and cached beside the dataset by the clips' content
and the feature and window settings, like the augmented copies.
"""

import json
import os

import numpy as np

import features
from pipeline import copies
from pipeline.events import window_starts
from pipeline.content_cache import file_key
from pipeline.workers import exit_with_parent, worker_count

VIEWS_VERSION = 1  # bump when what a window row is changes


def clip_windows(y, config, *, window_s, hop_s):
    """Feature rows of the windows predict.py would classify in audio ``y``.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Audio at ``config.sample_rate``.
    config : features.FeatureConfig
    window_s, hop_s : float

    Returns
    -------
    np.ndarray, shape (windows, config.n_features), float32: the usable
    windows only (a silent window has no features); (1, n) for a clip no
    longer than a window, (0, n) when nothing is usable.
    """
    window = int(window_s * config.sample_rate)
    hop = int(hop_s * config.sample_rate)
    if window < 1 or hop < 1:
        raise ValueError(f"window_s={window_s}, hop_s={hop_s}: both must be at least one sample")
    rows = []
    for start in window_starts(len(y), window, hop, config.window_alignment):
        try:
            rows.append(features.features_from_audio(y[start:start + window], config))
        except features.FeatureError:
            continue
    return np.array(rows, np.float32).reshape(len(rows), config.n_features)


def _clip_task(path, config, *, window_s, hop_s, parent_pid=None):
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    return clip_windows(features.load_audio(path, config.sample_rate), config,
                        window_s=window_s, hop_s=hop_s)


def all_windows(data, *, window_s, hop_s, dataset=None, jobs=-1):
    """Every clip's window rows, from the cache where it has them.

    Parameters
    ----------
    data : dict
        A dataset (:func:`pipeline.artifacts.load_dataset`) whose paths exist.
    window_s, hop_s : float
    dataset : str or Path or None
        The dataset file; the cache goes beside it (None: not cached).

    Returns
    -------
    rows : np.ndarray, shape (windows, n_features)
    of : np.ndarray of int, shape (windows,): the clip each row is of. A
        clip without a usable window keeps its dataset row as its one view.
    """
    import joblib

    from pipeline.progress import iterate
    paths = data["paths"]
    copies.require_clips(paths, "every patch", "--every_patch=false")
    config = data["feature_config"]
    ident = json.dumps({"version": VIEWS_VERSION, "features": config.to_dict(),
                        "window_s": window_s, "hop_s": hop_s}, sort_keys=True)
    keys = [file_key(p) for p in paths]
    cache_file = copies.cache_path(dataset, "windows " + ident) if dataset else None
    cache = copies.load_cache(cache_file, ident, config.n_features) if cache_file else {}
    found = {}
    for (key, k, _), row in cache.items():
        found.setdefault(key, {})[int(k)] = row
    todo = sorted({i for i, key in enumerate(keys) if key not in found},
                  key=lambda i: keys[i])
    if todo:
        calls = (joblib.delayed(_clip_task)(paths[i], config, window_s=window_s, hop_s=hop_s,
                                            parent_pid=os.getpid())
                 for i in todo)
        results = joblib.Parallel(n_jobs=worker_count(jobs, len(todo)),
                                  return_as="generator")(calls)
        for rows, i in zip(iterate(results, len(todo), "windows", "clip"), todo):
            rows = rows if len(rows) else data["features"][i][None]
            found[keys[i]] = dict(enumerate(rows))
        if cache_file:
            copies.save_cache(cache_file, ident, {(key, str(k), ""): row
                                                  for key in set(keys)
                                                  for k, row in found[key].items()})
    per_clip = [[found[key][k] for k in sorted(found[key])] for key in keys]
    of = np.repeat(np.arange(len(keys)), [len(r) for r in per_clip])
    return np.array([row for rows in per_clip for row in rows], np.float32), of


def mean_by_clip(probs, of, clips):
    """The mean of each clip's window probabilities.

    Parameters
    ----------
    probs : np.ndarray, shape (windows, classes)
    of : np.ndarray of int, shape (windows,): the clip of each window
    clips : sequence of int: the clips wanted, in order (each has a window)

    Returns
    -------
    np.ndarray, shape (len(clips), classes)
    """
    position = {int(c): k for k, c in enumerate(clips)}
    index = np.array([position[int(c)] for c in of])
    sums = np.zeros((len(clips), probs.shape[1]), np.float64)
    np.add.at(sums, index, probs)
    counts = np.bincount(index, minlength=len(clips))
    if np.any(counts == 0):
        raise ValueError("every clip needs at least one window")
    return (sums / counts[:, None]).astype(np.float32)
