"""How a trained network decides a dataset's clips, as predict.py decides
them: the loudest patch of each clip, or the mean of its windows'
(calibrated) probabilities; and the open-set rule fitted on those."""

import numpy as np

from pipeline import evaluation, open_set
from pipeline.standardisation import standardise


def predict_proba(model, x):
    """Class probabilities of rows of model inputs."""
    return model.predict(x, verbose=0, batch_size=256)


def fit_open_set(model, data, val, *, scaling, cfg, windows=None):
    """The open-set rule (temperature, minimum probability) from the
    validation split's predictions: of each clip's loudest patch, or with
    ``windows`` (:func:`clip_windows`) of its windows, as
    :func:`predict_rows` decides. None without validation clips (the seed's
    recipe): the model's own probabilities decide."""
    if not len(val):
        return None
    probs, clip_of = row_probabilities(lambda x: predict_proba(model, x), data, val,
                                       scaling=scaling, windows=windows)
    return open_set.fit_rule(probs, data["labels"][clip_of], data["label_names"],
                             background=cfg.open_set_class, keep=cfg.open_set_keep,
                             clip_of=None if windows is None else clip_of)


def row_probabilities(predict, data, rows, *, scaling, windows=None):
    """``predict``'s outputs (standardised inputs -> probabilities) for the
    loudest patch of each of dataset ``rows``, or with ``windows``
    (:func:`clip_windows`) for each of their windows.

    Returns
    -------
    probs : np.ndarray, shape (n, classes)
    clip_of : np.ndarray of int, shape (n,): the dataset row of each
    """
    if windows is None:
        x, clip_of = data["features"][rows], np.asarray(rows)
    else:
        mine = np.isin(windows[1], rows)
        x, clip_of = windows[0][mine], windows[1][mine]
    return predict(standardise(x, scaling)), clip_of


def clip_probabilities(predict, data, rows, *, scaling, windows=None, rule=None):
    """Class probabilities of dataset ``rows`` (:func:`row_probabilities`),
    calibrated by the open-set ``rule`` (if any): of each clip's loudest
    patch, or with ``windows`` the mean over its calibrated windows, as
    predict.py decides a clip longer than a window.

    Returns
    -------
    np.ndarray, shape (len(rows), classes)
    """
    probs, clip_of = row_probabilities(predict, data, rows, scaling=scaling, windows=windows)
    probs = open_set.calibrated(probs, rule)
    if windows is None:
        return probs
    from pipeline.views import mean_by_clip
    return mean_by_clip(probs, clip_of, rows)


def predict_rows(model, data, rows, *, scaling, rule=None, windows=None):
    """Decisions on dataset ``rows`` (:func:`clip_probabilities`): standardised
    as ``model`` was trained, then the open-set ``rule`` (if any) applied to
    the calibrated probabilities."""
    probs = clip_probabilities(lambda x: predict_proba(model, x), data, rows, scaling=scaling,
                               windows=windows, rule=rule)
    return open_set.decide(probs, rule, data["label_names"])


def evaluate_rows(model, data, rows, *, scaling, rule=None, windows=None):
    """Metrics of ``model`` (with ``rule``) on dataset ``rows``."""
    return evaluation.classification_metrics(data["labels"][rows],
                                             predict_rows(model, data, rows, scaling=scaling,
                                                          rule=rule, windows=windows),
                                             data["label_names"])
