"""Augmented copies of every clip, computed once and cached by content.

Each clip gets ``pool`` copies with fixed seeds (a hash of its audio, the
copy's index and the augmentation settings), so every training run, fold
and candidate setting sees the same copies, and a cross-validation fold
costs only model fitting. Odd copies mix in another clip (a *partner*,
from another source when there is one) as background; a training run uses
a copy only when its partner is a training clip too, so no held-out audio
ever reaches training. The cache lives beside the dataset
(``<dataset>_copies.npz``) and is valid for one feature configuration and
one set of augmentation settings; files are keyed by the hash of their
bytes, like the feature cache.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

import features
from pipeline import augment
from pipeline.errors import PipelineError
from pipeline import content_cache
from pipeline.content_cache import file_key
from pipeline.workers import exit_with_parent, worker_count

COPIES_VERSION = 1  # bump when what a copy is changes


def cache_path(dataset, ident):
    """The copies cache of a dataset file for one set of settings (each set
    has its own file, so comparing settings never recomputes)."""
    dataset = Path(dataset)
    tag = hashlib.blake2b(ident.encode(), digest_size=4).hexdigest()
    return dataset.with_name(f"{dataset.stem}_copies_{tag}.npz")


def responses_in(folder, sample_rate):
    """The impulse responses (WAV files) in ``folder``, resampled, sorted by
    name, and a digest of their bytes (part of the cache's identity)."""
    paths = sorted(p for p in Path(folder).glob("*.wav") if p.is_file())
    if not paths:
        raise PipelineError(f"{folder}: no impulse responses (.wav) there; pass "
                            "--ir_dir=FOLDER of microphone impulse responses, or none")
    digest = hashlib.blake2b(digest_size=16)
    responses = []
    for path in paths:
        digest.update(file_key(path).encode())
        try:
            responses.append(features.load_audio(path, sample_rate))
        except features.FeatureError as err:
            raise PipelineError(f"{path}: not a usable impulse response ({err.reason})") from None
    return responses, digest.hexdigest()


def identity(config, *, spec, ir_digest, ir_probability, room_probability, mix_labels=None):
    """The settings a cached copy depends on, as canonical JSON."""
    constants = {k: v for k, v in vars(augment).items() if k.isupper()}
    settings = {"version": COPIES_VERSION, "features": config.to_dict(),
                "augment": constants, "spec": bool(spec), "ir": ir_digest,
                "ir_probability": ir_probability, "room_probability": room_probability}
    if mix_labels is not None:  # (absent by default, so earlier caches stay valid)
        settings["mix_labels"] = sorted(mix_labels)
    return json.dumps(settings, sort_keys=True, default=list)


def partners(keys, sources, pool, eligible=None):
    """For each clip and copy: the index of the clip mixed in as background
    (odd copies), or -1. Partners come from other sources when there are
    any, each odd copy from a different one where possible, and only from
    the ``eligible`` clips (all by default; e.g. only background-class
    clips, so no target sound is mixed in under another label); the choice
    follows the clips' content keys, so it does not depend on their order.

    Returns
    -------
    np.ndarray of int, shape (clips, pool)
    """
    eligible = [True] * len(keys) if eligible is None else list(eligible)
    order = sorted((i for i in range(len(keys)) if eligible[i]), key=lambda i: keys[i])
    by_source = {}
    for i in order:
        by_source.setdefault(sources[i], []).append(i)
    chosen = np.full((len(keys), pool), -1, int)
    for i, key in enumerate(keys):
        rng = np.random.default_rng(int(key[:16], 16))
        others = [s for s in sorted(by_source) if s != sources[i]]
        rng.shuffle(others)
        for j, copy in enumerate(range(1, pool, 2)):
            if others:
                candidates = by_source[others[j % len(others)]]
            else:
                candidates = [k for k in order if k != i]
            if candidates:
                chosen[i, copy] = candidates[int(rng.integers(len(candidates)))]
    return chosen


def require_clips(paths, step, options):
    """PipelineError unless every clip is at its path: ``step`` (e.g.
    "augmentation") re-reads the audio, ``options`` turn it off."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise PipelineError(f"{step} re-reads the clips, but {len(missing)} are missing "
                            f"(first: {missing[0]}). Restore them, or pass {options}")


def copy_seed(key, copy, ident):
    """The seed of one copy: its clip's content, its index, the settings."""
    digest = hashlib.blake2b(f"{key}:{copy}:{ident}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


_RESPONSES = {}  # per process: the impulse responses, loaded once


def _responses(ir_dir, sample_rate):
    """The impulse responses of ``ir_dir`` (None: none), loaded once per process."""
    if not ir_dir:
        return None
    if ir_dir not in _RESPONSES:
        _RESPONSES[ir_dir] = responses_in(ir_dir, sample_rate)[0]
    return _RESPONSES[ir_dir]


def augmented_audio(y, partner, seed, *, sample_rate, responses, ir_probability,
                    room_probability):
    """One copy's audio: clip ``y`` augmented with the copy's ``seed``
    (``partner``: the clip mixed in as background, or None). Returns the
    audio and the copy's random generator, for what follows (SpecAugment)."""
    rng = np.random.default_rng(seed)
    background = features.load_audio(partner, sample_rate) if partner else None
    response = (responses[int(rng.integers(len(responses)))]
                if responses and rng.random() < ir_probability else None)
    room = rng.random() < room_probability
    return augment.augment_clip(y, rng, sample_rate, background, response=response,
                                room=room), rng


def clip_copies(path, partner_paths, seeds, *, config, spec, ir_dir, ir_probability,
                room_probability, parent_pid=None):
    """Feature rows of one clip's copies (NaN rows where a copy has no
    features, e.g. it turned silent).

    Parameters
    ----------
    path : str
    partner_paths : list of str or None
        Per copy, the clip mixed in as background, or None for synthetic noise.
    seeds : list of int
        Per copy.
    """
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    responses = _responses(ir_dir, config.sample_rate)
    y = features.load_audio(path, config.sample_rate)
    rows = np.full((len(seeds), config.n_features), np.nan, np.float32)
    for j, (partner, seed) in enumerate(zip(partner_paths, seeds)):
        audio, rng = augmented_audio(y, partner, seed, sample_rate=config.sample_rate,
                                     responses=responses, ir_probability=ir_probability,
                                     room_probability=room_probability)
        try:
            row = features.features_from_audio(audio, config)
        except features.FeatureError:
            continue
        if spec and config.input_shape:
            row = augment.spec_augment(row.reshape(config.input_shape), rng).ravel()
        rows[j] = row
    return rows


_TEACHERS = {}  # per process: the teacher, loaded once


def clip_copy_embeddings(path, partner_paths, seeds, *, teacher_path, config, ir_dir,
                         ir_probability, room_probability, parent_pid=None):
    """The teacher's embedding of each of one clip's copies: the same audio
    as :func:`clip_copies` (at the features' sample rate), resampled to the
    teacher's.

    Returns
    -------
    np.ndarray, shape (copies, embedding size)
    """
    import soxr
    from pipeline.teacher import Teacher
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    if teacher_path not in _TEACHERS:
        _TEACHERS[teacher_path] = Teacher(teacher_path)
    teacher = _TEACHERS[teacher_path]
    responses = _responses(ir_dir, config.sample_rate)
    y = features.load_audio(path, config.sample_rate)
    found = []
    for partner, seed in zip(partner_paths, seeds):
        audio, _ = augmented_audio(y, partner, seed, sample_rate=config.sample_rate,
                                   responses=responses, ir_probability=ir_probability,
                                   room_probability=room_probability)
        audio = soxr.resample(audio.astype(np.float32), config.sample_rate,
                              teacher.sample_rate, quality="HQ")
        found.append(teacher.clip_outputs(audio)[1])
    return np.stack(found).astype(np.float32)


def load_cache(path, ident, width):
    """{(clip key, copy, partner key): row}; empty when missing, damaged or
    made with other settings (a cache only ever costs time)."""
    return content_cache.load_rows(path, ident, width=width)[0]


def save_cache(path, ident, entries):
    width = len(next(iter(entries.values()))) if entries else 0
    content_cache.save_rows(path, ident, entries, width=width)


class _Plan:
    """What every clip's copies are: the settings' identity, each clip's
    partners and the cache key of each (clip, copy)."""

    def __init__(self, data, pool, *, spec, ir_dir, ir_probability, room_probability,
                 mix_labels):
        paths = data["paths"]
        require_clips(paths, "augmentation", "--augment=false --every_patch=false (training on "
                      "the dataset's rows alone)")
        self.config = data["feature_config"]
        ir_digest = responses_in(ir_dir, self.config.sample_rate)[1] if ir_dir else None
        self.ident = identity(self.config, spec=spec, ir_digest=ir_digest,
                              ir_probability=ir_probability, room_probability=room_probability,
                              mix_labels=mix_labels)
        self.keys = [file_key(p) for p in paths]
        eligible = (None if mix_labels is None else
                    [data["label_names"][k] in mix_labels for k in data["labels"]])
        self.partner = partners(self.keys, data["sources"], pool, eligible)
        self.entry_keys = [[(self.keys[i], str(j),
                             self.keys[self.partner[i, j]] if self.partner[i, j] >= 0 else "")
                            for j in range(pool)] for i in range(len(paths))]
        self.paths, self.pool = paths, pool

    def calls(self, worker, todo, **options):
        """joblib calls of ``worker`` for the clips ``todo``."""
        import joblib
        return (joblib.delayed(worker)(
            self.paths[i], [self.paths[self.partner[i, j]] if self.partner[i, j] >= 0 else None
                            for j in range(self.pool)],
            [copy_seed(self.keys[i], j, self.ident) for j in range(self.pool)],
            config=self.config, parent_pid=os.getpid(), **options) for i in todo)

    def fill(self, cache, cache_file, worker, *, what, jobs, width, **options):
        """Compute the entries ``cache`` lacks (clip by clip, in worker
        processes), save it, and return every clip's entries stacked:
        shape (clips, pool, width)."""
        import joblib

        from pipeline.progress import iterate
        todo = [i for i in range(len(self.paths))
                if not all(k in cache for k in self.entry_keys[i])]
        if todo:
            results = joblib.Parallel(n_jobs=worker_count(jobs, len(todo)),
                                      return_as="generator")(self.calls(worker, todo, **options))
            for rows, i in zip(iterate(results, len(todo), what, "clip"), todo):
                cache.update(zip(self.entry_keys[i], rows))
            if cache_file:
                content_cache.save_rows(cache_file, self.ident, {
                    k: cache[k] for keys_i in self.entry_keys for k in keys_i}, width=width)
        return np.stack([np.stack([cache[k] for k in keys_i]) for keys_i in self.entry_keys])


def all_copies(data, *, pool, dataset, spec=False, ir_dir=None, ir_probability=0.0,
               room_probability=0.0, mix_labels=None, jobs=-1):
    """Every clip's ``pool`` copies, from the cache where it has them; with
    ``mix_labels`` only clips of those classes are mixed in as background.

    Parameters
    ----------
    data : dict
        A dataset (:func:`pipeline.artifacts.load_dataset`): its paths must
        exist, since copies are made from the audio.
    dataset : str or Path or None
        The dataset file; the cache goes beside it (None: not cached).

    Returns
    -------
    rows : np.ndarray, shape (clips, pool, n_features); NaN for no copy
    partner : np.ndarray of int, shape (clips, pool); -1 for none
    """
    plan = _Plan(data, pool, spec=spec, ir_dir=ir_dir, ir_probability=ir_probability,
                 room_probability=room_probability, mix_labels=mix_labels)
    cache_file = cache_path(dataset, plan.ident) if dataset else None
    cache = load_cache(cache_file, plan.ident, plan.config.n_features) if cache_file else {}
    rows = plan.fill(cache, cache_file, clip_copies, what="augmenting", jobs=jobs,
                     width=plan.config.n_features, spec=spec,
                     ir_dir=str(ir_dir) if ir_dir else None, ir_probability=ir_probability,
                     room_probability=room_probability)
    return rows, plan.partner


def all_copy_embeddings(data, teacher, *, pool, dataset, spec=False, ir_dir=None,
                        ir_probability=0.0, room_probability=0.0, mix_labels=None, jobs=-1):
    """The teacher's embedding of every copy :func:`all_copies` makes with
    the same settings, computed once per clip content, copy and teacher and
    cached beside the dataset (so a LOSO fold never runs the teacher).

    Parameters
    ----------
    teacher : pipeline.teacher.Teacher

    Returns
    -------
    np.ndarray, shape (clips, pool, embedding size)
    """
    plan = _Plan(data, pool, spec=spec, ir_dir=ir_dir, ir_probability=ir_probability,
                 room_probability=room_probability, mix_labels=mix_labels)
    width = teacher.clip_outputs(np.zeros(teacher.sample_rate, np.float32))[1].size
    copies_file = cache_path(dataset, plan.ident) if dataset else None
    cache_file = (copies_file.with_name(f"{copies_file.stem}_teacher_{teacher.sha256[:12]}.npz")
                  if copies_file else None)
    cache = content_cache.load_rows(cache_file, plan.ident, width=width)[0] if cache_file else {}
    return plan.fill(cache, cache_file, clip_copy_embeddings, what="teacher (copies)",
                     jobs=jobs, width=width, teacher_path=str(teacher.model_path),
                     ir_dir=str(ir_dir) if ir_dir else None, ir_probability=ir_probability,
                     room_probability=room_probability)


def training_copies(rows, partner, train, *, copies, seed):
    """Up to ``copies`` copies of each training clip, drawn (with ``seed``)
    from those that exist and whose partner is a training clip too.

    Returns
    -------
    x : np.ndarray, shape (k, n_features)
    source_rows : np.ndarray of int, shape (k,): the clip each copy is of
    which : np.ndarray of int, shape (k,): each copy's index among its clip's
    """
    in_train = np.zeros(len(rows), bool)
    in_train[train] = True
    rng = np.random.default_rng(seed)
    chosen, of, which = [], [], []
    for i in train:
        usable = [j for j in range(rows.shape[1])
                  if not np.isnan(rows[i, j, 0]) and (partner[i, j] < 0 or in_train[partner[i, j]])]
        for j in rng.permutation(usable)[:copies]:
            chosen.append(rows[i, j])
            of.append(i)
            which.append(j)
    width = rows.shape[2]
    return (np.array(chosen, np.float32).reshape(len(chosen), width),
            np.array(of, dtype=np.int64), np.array(which, dtype=np.int64))
