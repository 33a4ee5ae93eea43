"""Leakage-safe splits and what held-out predictions say.

Clips of one group (source recording) never sit on both sides of a split;
splits are stratified by class. train_16k.py (its test split, --folds) and
bench/bench_accuracy.py use the same functions, so their figures mean the
same thing.
"""

from typing import NamedTuple

import numpy as np

from pipeline import evaluation
from pipeline.errors import PipelineError


class Split(NamedTuple):
    """One fold (or one held-out source): row indices of each side."""

    name: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def grouped_split(labels, groups, fraction, seed):
    """Split indices into (kept, held_out): about ``fraction`` of the groups
    held out, stratified by class, no group on both sides."""
    from sklearn.model_selection import StratifiedGroupKFold
    from pipeline.errors import PipelineError
    labels, groups = np.asarray(labels), np.asarray(groups)
    fewest = min(len(set(groups[labels == c])) for c in np.unique(labels))
    if fewest < 2:
        raise PipelineError("a class has clips from only one group (source recording), so it "
                            "cannot sit on both sides of a split: add clips from more recordings")
    # With few groups per class, hold out one in ``fewest`` rather than one in
    # 1/fraction: scikit-learn refuses more splits than a class has members.
    n_splits = min(max(2, round(1 / fraction)), fewest)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    kept, held_out = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return kept, held_out


def train_val_test_split(labels, groups, *, test_fraction, val_fraction, seed):
    """Indices of the train, validation and test splits (grouped, stratified)."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    rest, test = grouped_split(labels, groups, test_fraction, seed)
    train, val = grouped_split(labels[rest], groups[rest], val_fraction, seed)
    return rest[train], rest[val], test


def cv_splits(labels, groups, folds, *, val_fraction, seed):
    """Grouped, stratified k-fold: a :class:`Split` of indices
    per fold; each fold's remaining groups are split again for early stopping."""
    from sklearn.model_selection import StratifiedGroupKFold
    labels, groups = np.asarray(labels), np.asarray(groups)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (rest, test) in enumerate(splitter.split(labels, labels, groups), start=1):
        inner_train, inner_val = grouped_split(labels[rest], groups[rest], val_fraction, seed)
        yield Split(f"fold {k}", rest[inner_train], rest[inner_val], test)


def source_splits(labels, groups, sources, *, val_fraction, seed):
    """Leave one source out: a :class:`Split` of indices per source, the
    test being every clip of one source; the other sources' groups are split
    for early stopping. The closest thing to a microphone and room the model
    has never heard."""
    labels, groups, sources = np.asarray(labels), np.asarray(groups), np.asarray(sources)
    for source in sorted(set(sources)):
        test, rest = np.flatnonzero(sources == source), np.flatnonzero(sources != source)
        inner_train, inner_val = grouped_split(labels[rest], groups[rest], val_fraction, seed)
        yield Split(str(source), rest[inner_train], rest[inner_val], test)


def chosen_sources(names, words):
    """The source ``names`` that contain one of ``words`` (every name when
    there are no words): the --sources screen of bench/. PipelineError when
    none does."""
    chosen = [n for n in names if not words or any(w in n for w in words)]
    if not chosen:
        raise PipelineError(f"--sources: no source name contains any of {', '.join(words)}")
    return chosen


def evaluation_splits(data, plan, *, val_fraction, seed):
    """The splits that --folds asks for."""
    if plan == "source":
        return source_splits(data["labels"], data["groups"], data["sources"],
                             val_fraction=val_fraction, seed=seed)
    return cv_splits(data["labels"], data["groups"], plan, val_fraction=val_fraction, seed=seed)


def _in_worker(run_split, k, split, parent_pid):
    """One split in a worker process: single-threaded, deterministic
    TensorFlow (small models use about one core each, so two folds side by
    side train almost twice as fast as one on two cores); the worker ends
    itself when the run's process dies."""
    from pipeline.workers import exit_with_parent
    from pipeline.quiet import configure_tensorflow
    exit_with_parent(parent_pid)
    configure_tensorflow(threads=1)
    return run_split(k, split)


def run_splits(splits, run_split, *, jobs=1):
    """``run_split(k, split)`` for every split (k counts from 1), in
    ``jobs`` processes (1: in this one; -1: one per core); yields the
    results in order, each as soon as it and those before it are done.

    ``run_split`` and what it returns must be picklable when ``jobs`` != 1
    (a module-level function, or a closure over plain data)."""
    if jobs == 1:
        for k, split in enumerate(splits, start=1):
            yield run_split(k, split)
        return
    import os

    import joblib

    from pipeline.workers import worker_count
    calls = (joblib.delayed(_in_worker)(run_split, k, split, os.getpid())
             for k, split in enumerate(splits, start=1))
    yield from joblib.Parallel(n_jobs=worker_count(jobs, len(splits)),
                               return_as="generator")(calls)


def held_out_predictions(n_rows, splits, predict_split, *, jobs=1):
    """Pooled predictions: each split's test rows predicted by
    ``predict_split(k, split)`` (a model that never saw them; k counts from
    1), ``jobs`` splits at a time (:func:`run_splits`)."""
    pooled = np.zeros(n_rows, int)
    for split, predicted in zip(splits, run_splits(splits, predict_split, jobs=jobs)):
        pooled[split.test] = predicted
    return pooled


def summarise_splits(data, plan, splits, pooled):
    """Per split (fold or source) and pooled metrics of held-out predictions."""
    folds = []
    for name, _, _, test in splits:
        metrics = evaluation.classification_metrics(data["labels"][test], pooled[test],
                                                    data["label_names"])
        folds.append({"name": name, "accuracy": metrics["accuracy"],
                      "macro_f1": metrics["macro_f1"],
                      "classes": sorted({data["label_names"][c] for c in data["labels"][test]}),
                      "test": [data["paths"][i] for i in test]})
    summary = {m: {"mean": float(np.mean([f[m] for f in folds])),
                   "std": float(np.std([f[m] for f in folds]))} for m in ("accuracy", "macro_f1")}
    tested = np.concatenate([test for *_, test in splits])  # every row, unless only some sources
    return {"kind": "source" if plan == "source" else f"{plan}-fold", "folds": folds, **summary,
            "pooled": evaluation.classification_metrics(data["labels"][tested], pooled[tested],
                                                        data["label_names"])}


def folds_text(result):
    """Per-fold (or per-source) table and the pooled figures."""
    title = "leave-one-source-out" if result["kind"] == "source" else f"{result['kind']} CV"
    lines = [f"{title}: macro-F1 pooled {result['pooled']['macro_f1']:.3f}, mean "
             f"{result['macro_f1']['mean']:.3f} +/- {result['macro_f1']['std']:.3f}; accuracy "
             f"mean {result['accuracy']['mean']:.3f}",
             f"{'held out':<32}{'clips':>7}{'accuracy':>10}{'macro-F1':>10}  classes"]
    for fold in result["folds"]:
        lines.append(f"{fold['name'][:31]:<32}{len(fold['test']):>7}{fold['accuracy']:>10.3f}"
                     f"{fold['macro_f1']:>10.3f}  {', '.join(fold['classes'])}")
    per_class = result["pooled"]["per_class"]
    lines.append("pooled per-class F1: " + ", ".join(f"{name} {row['f1']:.3f}"
                                                      for name, row in per_class.items()))
    return "\n".join(lines) + "\n"
