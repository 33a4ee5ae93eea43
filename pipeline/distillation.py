"""Knowledge from a pretrained tagger for the small device model.

The teacher is a pretrained AudioSet tagger (:mod:`pipeline.teacher`) with a
linear head fitted on the training clips' embeddings (a logistic
regression, the "linear probe": on dev16k v4 it scores LOSO 0.85 where our
own CNN scores about 0.64). Its class probabilities become soft targets for
the student (Hinton et al. 2015): for the training clips, every window and
augmented copy of a clip taking that clip's probabilities (or, with
DISTIL_COPIES "teacher", a copy the teacher's probabilities of its own
audio, cached per clip content, copy and teacher); and for
unlabelled audio a user points to, whose windows the student learns from
the teacher alone. That unlabelled audio is where most of the teacher's
knowledge reaches the student: sounds the labelled set does not have.

Only training clips teach: the head is fitted on them, and unlabelled clips
that share a recording (group) or a source with any held-out clip are left
out, so a fold's held-out audio never reaches its training.
"""

import csv
import os
from pathlib import Path

import numpy as np

from pipeline import teacher as teachers
from pipeline.errors import PipelineError


class Unlabelled:
    """Unlabelled clips: ``paths`` with their ``groups`` and ``sources``."""

    def __init__(self, paths, groups, sources):
        self.paths, self.groups, self.sources = list(paths), list(groups), list(sources)


def unlabelled_clips(where):
    """Clips of a folder (searched recursively; each file its own group, no
    source) or a CSV manifest with a ``path`` column and optional ``group``
    and ``source`` (dev16k's pool manifest, for instance).

    Returns
    -------
    Unlabelled
    """
    from pipeline.clips import expand_paths
    where = Path(where)
    if where.is_dir():
        paths = [str(p) for p in expand_paths([where])]
        if not paths:
            raise PipelineError(f"{where}: no audio files there (--unlabelled)")
        return Unlabelled(paths, paths, [""] * len(paths))
    if not where.is_file():
        raise PipelineError(f"{where}: no such folder or manifest of unlabelled audio "
                            "(--unlabelled)")
    with open(where, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or []):
            raise PipelineError(f"{where}: a manifest of unlabelled audio needs a 'path' column")
        rows = [r for r in reader if (r.get("path") or "").strip()]
    paths = [os.path.normpath(where.parent / r["path"].strip()) for r in rows]
    return Unlabelled(paths, [(r.get("group") or "").strip() or p for r, p in zip(rows, paths)],
                      [(r.get("source") or "").strip() for r in rows])


def usable_unlabelled(pool, data, train):
    """Positions of ``pool`` clips that may teach a model trained on dataset
    rows ``train``: none that shares a group with a row outside ``train``,
    nor a source that has rows outside ``train`` only (a held-out source)."""
    outside = np.setdiff1d(np.arange(len(data["paths"])), train)
    held_groups = {data["groups"][i] for i in outside}
    train_sources = {data["sources"][i] for i in train}
    held_sources = {data["sources"][i] for i in outside} - train_sources - {""}
    return np.array([k for k, (g, s) in enumerate(zip(pool.groups, pool.sources))
                     if g not in held_groups and s not in held_sources], np.int64)


def clip_cache(dataset, tutor):
    """Where a dataset's teacher outputs per clip are cached."""
    dataset = Path(dataset)
    return dataset.with_name(f"{dataset.stem}_teacher_clips_{tutor.sha256[:12]}.npz")


def fit_head(embedding, labels, n_classes, *, seed):
    """The teacher's head: standardised logistic regression with balanced
    class weights, fitted on training clips' embeddings.

    Returns
    -------
    callable: embeddings (n, d) -> probabilities (n, n_classes)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    missing = sorted(set(range(n_classes)) - set(np.unique(labels).tolist()))
    if missing:
        raise PipelineError(f"the teacher's head needs training clips of every class; none of "
                            f"class {missing}")
    head = make_pipeline(StandardScaler(), LogisticRegression(
        class_weight="balanced", max_iter=2000, random_state=seed))
    head.fit(embedding, labels)
    return lambda e: head.predict_proba(e).astype(np.float32)


def teacher_targets(tutor, data, train, *, dataset, seed, progress=True):
    """The teacher's class probabilities of every dataset clip, from a head
    fitted on the ``train`` clips only.

    Returns
    -------
    np.ndarray, shape (clips, classes)
    """
    from pipeline.progress import Progress
    paths = data["paths"]
    with Progress(len(paths), "teacher (clips)", "clip") if progress else _Nothing() as bar:
        embedding = teachers.clip_outputs(tutor, paths, cache=clip_cache(dataset, tutor),
                                          progress=bar)[1]
    head = fit_head(embedding[train], data["labels"][train], len(data["label_names"]),
                    seed=seed)
    return head(embedding), head


def unlabelled_rows(tutor, head, pool, chosen, *, config, dataset, window_s, hop_s,
                    every_patch, jobs=-1):
    """The student's rows of the ``chosen`` unlabelled clips (every window,
    or each clip's own features) and the teacher's probabilities for them.

    Returns
    -------
    x : np.ndarray, shape (rows, n_features)
    probs : np.ndarray, shape (rows, classes)
    of : np.ndarray of int, shape (rows,): position in ``chosen`` of each row's clip
    """
    from pipeline import extraction, views
    from pipeline.progress import Progress
    paths = [pool.paths[k] for k in chosen]
    if not paths:
        return (np.zeros((0, config.n_features), np.float32),
                np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
    with Progress(len(paths), "teacher (unlabelled)", "clip") as bar:
        embedding = teachers.clip_outputs(tutor, paths, cache=clip_cache(dataset, tutor),
                                          progress=bar)[1]
    store = Path(dataset).with_name(f"{Path(dataset).stem}_unlabelled.npz")
    cache_file = extraction.cache_path(store)
    results, entries = extraction.extract_all(paths, config, jobs=jobs,
                                              cache=extraction.load_cache(cache_file, config))
    extraction.save_cache(cache_file, config, entries)
    usable = [k for k, r in enumerate(results) if r.vector is not None]
    if not usable:
        raise PipelineError("no unlabelled clip gave features (all silent or unreadable)")
    probs = head(embedding[usable])
    rows = np.stack([results[k].vector for k in usable])
    if not every_patch:
        return rows, probs, np.asarray(usable, np.int64)
    pseudo = {"paths": [paths[k] for k in usable], "features": rows, "feature_config": config}
    x, of = views.all_windows(pseudo, window_s=window_s, hop_s=hop_s, dataset=store, jobs=jobs)
    return x, probs[of], np.asarray(usable, np.int64)[of]


def distilled_targets(y, teacher_probs, *, weight, temperature):
    """Knowledge distillation targets: ``1 - weight`` of the labels ``y``
    plus ``weight`` of the teacher's probabilities softened by
    ``temperature`` (Hinton et al. 2015).

    Parameters
    ----------
    y, teacher_probs : np.ndarray, shape (n, classes)

    Returns
    -------
    np.ndarray, shape (n, classes), float32; rows sum to 1
    """
    logits = np.log(np.clip(teacher_probs, 1e-7, 1.0)) / temperature
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    return ((1 - weight) * y + weight * soft).astype(np.float32)


def training_targets(data, train, cfg, x, *, y, copy_of, view_of, copy_index=None,
                     copy_settings=None):
    """DISTIL_FROM: the targets of the training rows become DISTIL_WEIGHT of
    the teacher's probabilities of their clip (softened by DISTIL_TEMPERATURE;
    with DISTIL_COPIES "teacher", an augmented copy's are the teacher's
    probabilities of the copy's own audio: copy ``copy_index`` of the copies
    ``copy_settings`` make, :func:`pipeline.copies.all_copy_embeddings`), and
    with UNLABELLED the windows of unlabelled clips join the clips, with
    the teacher's softened probabilities as their only targets. Returns x, y
    and view_of (copies stay last, as :mod:`pipeline.epochs` expects)."""
    tutor = teachers.Teacher(cfg.distil_from)
    probs, head = teacher_targets(tutor, data, train, dataset=cfg.dataset, seed=cfg.seed)
    n_first = len(x) - len(copy_of)  # clips (or views), noises; then copies
    first_of = view_of if view_of is not None else np.arange(n_first)
    clip_probs = probs[np.asarray(train)]
    soft = y.copy()
    real = first_of < len(train)  # noise negatives keep their labels
    soft[:n_first][real] = clip_probs[first_of[real]]
    soft[n_first:] = clip_probs[copy_of]
    if cfg.distil_copies == "teacher" and len(copy_of):
        from pipeline import copies
        embedding = copies.all_copy_embeddings(data, tutor, **copy_settings)
        soft[n_first:] = head(embedding[np.asarray(train)[copy_of], copy_index])
    y = distilled_targets(y, soft, weight=cfg.distil_weight, temperature=cfg.distil_temperature)
    if not cfg.unlabelled:
        return x, y, view_of
    pool = unlabelled_clips(cfg.unlabelled)
    chosen = usable_unlabelled(pool, data, train)
    ux, uprobs, uof = unlabelled_rows(
        tutor, head, pool, chosen, config=data["feature_config"], dataset=cfg.dataset,
        window_s=cfg.window_s, hop_s=cfg.hop_s, every_patch=cfg.every_patch, jobs=cfg.jobs)
    uy = distilled_targets(uprobs, uprobs, weight=1.0, temperature=cfg.distil_temperature)
    x = np.concatenate([x[:n_first], ux, x[n_first:]]).astype(np.float32)
    y = np.concatenate([y[:n_first], uy, y[n_first:]]).astype(np.float32)
    if view_of is not None:  # unlabelled clips are clips after all others
        view_of = np.concatenate([view_of, view_of.max() + 1 + uof])
    return x, y, view_of


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
