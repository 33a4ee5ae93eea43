"""pipeline/open_set.py: temperature, minimum probability, decisions."""

import numpy as np
import pytest

from pipeline import open_set

LABELS = ["alarm", "other", "water"]


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_calibrate_equals_softmax_of_scaled_logits():
    logits = np.random.default_rng(0).normal(0, 2, (50, 3))
    for t in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(open_set.calibrate(softmax(logits), t), softmax(logits / t),
                                   atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        open_set.calibrate(softmax(logits), 0.0)


def test_fit_temperature_recovers_overconfidence():
    """Labels drawn from softmax(z); a model that outputs softmax(3 z) is
    overconfident by 3, and the fitted temperature says so."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.0, (4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(z)])
    assert abs(open_set.fit_temperature(softmax(3 * z), labels) - 3.0) < 0.4
    assert abs(open_set.fit_temperature(softmax(z), labels) - 1.0) < 0.15


def test_rule_keeps_the_asked_share_and_falls_back():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1, 2], 100)
    probs = softmax(rng.normal(0, 1, (300, 3)) + 4 * np.eye(3)[labels])
    rule = open_set.fit_rule(probs, labels, LABELS, background="other", keep=0.9)
    assert rule["background"] == "other" and 0 < rule["min_probability"] < 1
    calibrated = open_set.calibrate(probs, rule["temperature"])
    decided = open_set.decide(calibrated, rule, LABELS)
    right_events = (calibrated.argmax(1) == labels) & (labels != 1)
    kept = np.mean(decided[right_events] == labels[right_events])
    assert 0.9 <= kept < 0.95  # the rule keeps (about) the asked share, no more
    unsure = np.array([[0.4, 0.3, 0.3], [0.3, 0.3, 0.4], [0.98, 0.01, 0.01]])
    assert open_set.decide(unsure, {**rule, "min_probability": 0.5}, LABELS).tolist() == [1, 1, 0]
    assert open_set.decide(unsure, None, LABELS).tolist() == [0, 2, 0]


def test_rule_on_windows_keeps_the_share_of_clips_as_predict_decides():
    """With ``clip_of`` the minimum probability is set on each clip's mean
    of calibrated windows (predict.py's decision), not on single windows."""
    rng = np.random.default_rng(4)
    clip_labels = np.repeat([0, 1, 2], 60)
    clip_of = np.repeat(np.arange(180), 4)  # four windows per clip
    labels = clip_labels[clip_of]
    probs = softmax(rng.normal(0, 1.5, (720, 3)) + 2 * np.eye(3)[labels])
    rule = open_set.fit_rule(probs, labels, LABELS, background="other", keep=0.9,
                             clip_of=clip_of)
    assert rule["temperature"] == open_set.fit_temperature(probs, labels)
    clips = open_set.calibrate(probs, rule["temperature"]).reshape(180, 4, 3).mean(axis=1)
    decided = open_set.decide(clips, rule, LABELS)
    right_events = (clips.argmax(1) == clip_labels) & (clip_labels != 1)
    assert 0.9 <= np.mean(decided[right_events] == clip_labels[right_events]) < 0.95
    by_window = open_set.fit_rule(probs, labels, LABELS, background="other", keep=0.9)
    assert by_window["min_probability"] != rule["min_probability"]


def test_no_background_class_means_no_fallback():
    probs = softmax(np.random.default_rng(3).normal(0, 1, (30, 3)))
    rule = open_set.fit_rule(probs, np.arange(30) % 3, ["a", "b", "c"], background="other",
                             keep=0.9)
    assert rule["background"] is None and rule["min_probability"] == 0.0


def test_stored_rule_is_checked():
    from pipeline.errors import PipelineError
    open_set.check_rule(None, LABELS, "m.json")
    open_set.check_rule({"temperature": 1.5, "min_probability": 0.4, "background": "other"},
                        LABELS, "m.json")
    for bad in ({"temperature": 0, "min_probability": 0.4, "background": "other"},
                {"temperature": 1.0, "min_probability": 1.5, "background": "other"},
                {"temperature": 1.0, "min_probability": 0.4, "background": "cat"}):
        with pytest.raises(PipelineError, match="open_set rule"):
            open_set.check_rule(bad, LABELS, "m.json")
