"""Open-set decisions: a model trained on water / alarm / other must not be
forced to call a sound it has never heard water or alarm.

train_16k.py fits a *temperature* on the validation split (so that the
probabilities mean what they say), then a *minimum probability*: an event
class wins only when its calibrated probability reaches it; below, the clip
falls back to the background class ("other"). The rule is stored in the
model metadata and applied by predict.py, model_conv.py's report and the C
header alike.
"""

import numpy as np

_EPS = 1e-7  # keeps log() finite for outputs of exactly 0 (common in int8)


def calibrate(probs, temperature):
    """Probabilities as the softmax of (logits / temperature), computed from
    the softmax outputs themselves: p_T is proportional to p ** (1 / T).

    Parameters
    ----------
    probs : np.ndarray, shape (n, classes)
    temperature : float > 0

    Returns
    -------
    np.ndarray, shape (n, classes), rows summing to 1
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_temperature(probs, labels, *, low=0.5, high=8.0, steps=60):
    """The temperature that minimises the negative log-likelihood of
    ``labels`` (a grid search on a log scale: robust, and enough for one
    number)."""
    labels = np.asarray(labels)
    grid = np.geomspace(low, high, steps)
    nll = [-np.mean(np.log(np.clip(calibrate(probs, t)[np.arange(len(labels)), labels],
                                   1e-12, 1.0))) for t in grid]
    return float(grid[int(np.argmin(nll))])


def fit_rule(probs, labels, label_names, *, background, keep, clip_of=None):
    """The open-set rule from validation predictions.

    Parameters
    ----------
    probs : np.ndarray, shape (n, classes)
        Model outputs on the validation split: one row per clip, or with
        ``clip_of`` one per window.
    labels : array of int, shape (n,)
    label_names : list of str
    background : str or None
        The class unknown sounds fall back to; None (or not a label) turns
        the minimum probability off.
    keep : float in (0, 1]
        Share of the correctly classified validation clips of event classes
        that the minimum probability must keep.
    clip_of : array of int, shape (n,), optional
        The clip of each window. The temperature is then fitted on the
        windows (predict.py calibrates each window) and the minimum
        probability on each clip's mean of calibrated windows (what
        predict.py decides a clip by).

    Returns
    -------
    dict
        ``temperature``, ``min_probability``, ``background`` (plain JSON).
    """
    temperature = fit_temperature(probs, labels)
    rule = {"temperature": temperature, "min_probability": 0.0, "background": None}
    if not background or background not in label_names:
        return rule
    calibrated, labels = calibrate(probs, temperature), np.asarray(labels)
    if clip_of is not None:
        from pipeline.views import mean_by_clip
        clips, first = np.unique(clip_of, return_index=True)
        calibrated, labels = mean_by_clip(calibrated, clip_of, clips), labels[first]
    predicted = calibrated.argmax(axis=1)
    back = label_names.index(background)
    right = (predicted == labels) & (labels != back)
    if right.any():
        top = calibrated[right].max(axis=1)
        rule["min_probability"] = float(np.quantile(top, 1.0 - keep, method="lower"))
    rule["background"] = background
    return rule


def calibrated(probs, rule):
    """``probs`` at the rule's temperature; as they are when there is no
    rule (metadata from before rules were stored)."""
    return calibrate(probs, rule["temperature"]) if rule else np.asarray(probs, np.float32)


def apply_rule(probs, rule, label_names):
    """Calibrated probabilities and the decisions :func:`decide` takes on them.

    Returns
    -------
    calibrated : np.ndarray, shape (n, classes)
    decisions : np.ndarray of int, shape (n,)
    """
    scaled = calibrated(probs, rule)
    return scaled, decide(scaled, rule, label_names)


def decide(calibrated, rule, label_names):
    """Class index per row of calibrated probabilities: the most probable
    class, or the background class when an event class wins with less than
    the rule's minimum probability."""
    calibrated = np.atleast_2d(calibrated)
    best = calibrated.argmax(axis=1)
    if not rule or not rule.get("background"):
        return best
    back = label_names.index(rule["background"])
    unsure = (best != back) & (calibrated.max(axis=1) < rule["min_probability"])
    return np.where(unsure, back, best)


def check_rule(rule, label_names, source):
    """A stored rule: None, or a positive finite temperature, a minimum
    probability in [0, 1] and a background class among the labels."""
    from pipeline.errors import PipelineError
    if rule is None:
        return
    ok = (isinstance(rule, dict) and isinstance(rule.get("temperature"), (int, float))
          and 0 < rule["temperature"] < float("inf")
          and isinstance(rule.get("min_probability"), (int, float))
          and 0 <= rule["min_probability"] <= 1
          and (rule.get("background") is None or rule["background"] in label_names))
    if not ok:
        raise PipelineError(f"{source}: open_set rule {rule!r} is not valid. Retrain with "
                            "`python train_16k.py`.")
