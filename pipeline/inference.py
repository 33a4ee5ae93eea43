"""Running a trained model: a classifier that computes its own features,
per-window probabilities of long recordings, and the event settings that
travel with the model.

predict.py, calibrate.py and model_conv.py (the device header) all use
this module, so a window, a threshold or a smoothing width means the same
in each. Event settings are data stored with the model: train_16k.py writes
the defaults (``events`` in model_16k.json), calibrate.py the calibrated
choice (``calibration``); a stage's own constants only override them when
given on its command line.
"""

import math
from pathlib import Path

import numpy as np

import features
from pipeline import artifacts, open_set, settings
from pipeline.errors import PipelineError
from pipeline.events import EventSettings, find_events, smooth, stream_windows, window_centres
from pipeline.standardisation import standardise

EVENT_KEYS = ("window_s", "hop_s", "smooth_windows", "threshold", "min_event_s", "background")
MIN_HOP_S = 0.001  # shorter hops (under one sample, at most rates) would never advance
DEVICE_MAX_SMOOTH = 15  # AF_EVENTS_MAX_SMOOTH of device/include/af_events.h (a test checks)


def check_device_smoothing(widths, config, option):
    """PipelineError, before any work, when a device model would be given a
    moving average wider than the device's event code keeps."""
    if config.preset in features.DEVICE_PRESETS and max(widths) > DEVICE_MAX_SMOOTH:
        raise PipelineError(f"{option}: the device's event code smooths over at most "
                            f"{DEVICE_MAX_SMOOTH} windows (AF_EVENTS_MAX_SMOOTH), and this "
                            "model's events run on the device too; choose at most "
                            f"{DEVICE_MAX_SMOOTH}")


class Classifier:
    """A trained model plus its metadata; ``probabilities(features)``.

    Features are computed with the configuration stored in the model's
    metadata, whatever features.py's constants say today.

    Parameters
    ----------
    model_path : str or Path
        A ``.tflite`` file (run by LiteRT, without TensorFlow) or ``.keras``.
    """

    def __init__(self, model_path):
        path = Path(model_path)
        if not path.is_file():
            made_by = "python train_16k.py" if path.suffix == ".keras" else "python model_conv.py"
            raise PipelineError(f"{path}: model not found. Run `{made_by}` first "
                                "(or pass --model=PATH).")
        if path.suffix not in (".keras", ".tflite"):
            raise PipelineError(f"{path}: expected a .tflite or .keras model")
        self.path = path
        self.meta = artifacts.load_model_metadata(path.parent)
        self.labels = self.meta["labels"]
        self.config = self.meta["feature_config"]
        # the seed's method (train_16k.py --recipe=seed) decides a file by the
        # features of all of it; other models by the mean of their windows
        self.whole_clip = self.meta.get("decides_clips_by") == "whole_clip"
        if path.suffix == ".keras":
            model = artifacts.load_keras_model(path, self.meta)
            self._run = lambda x: model.predict(x, verbose=0)
        else:
            from pipeline.tflite_model import TFLiteModel
            artifacts.check_belongs(path, self.meta)
            # A model the device runs is run with the kernels TFLite Micro
            # has, so predict.py, calibrate.py and the board decide alike.
            device = self.config.preset in features.DEVICE_PRESETS
            tflite = TFLiteModel(path, reference=device)
            artifacts.check_model_shape(int(np.prod(tflite.input_shape[1:])),
                                        int(tflite.output["shape"][-1]), self.meta, path)
            self._run = tflite.predict_proba

    def probabilities(self, feature_rows):
        """Calibrated class probabilities (rows sum to about 1) for feature
        vectors of shape (n, n_features): the model's outputs at the
        temperature fitted in training."""
        probs = self._run(standardise(np.atleast_2d(feature_rows),
                                      self.meta.get("input_standardisation")))
        return open_set.calibrated(probs, self.meta.get("open_set"))

    def decide(self, probs):
        """Class index of calibrated probabilities (shape (classes,)): the
        most probable class, or the background class when an event class is
        not sure enough."""
        return int(open_set.decide(probs, self.meta.get("open_set"), self.labels)[0])


def check_listens(classifier, mode):
    """PipelineError for a whole-clip model (the seed's recipe) in a mode
    that listens window by window (events, live listening, mining,
    calibration)."""
    if classifier.whole_clip:
        raise PipelineError(f"{classifier.path}: {mode} needs a model that listens window by "
                            "window, and this one decides whole clips (train_16k.py "
                            "--recipe=seed, the seed's method). Train with --recipe=default")


def model_path(model, model_dir):
    """The model file a stage runs: ``model`` when given, else the int8
    model in ``model_dir``."""
    return Path(model) if model else artifacts.model_paths(model_dir)["int8_tflite"]


def window_probabilities(classifier, path, *, window_s, hop_s, batch=64):
    """Per-window class probabilities of a recording, read as a stream so
    that memory stays flat however long it is; silent windows get all zeros.

    Returns
    -------
    centres : np.ndarray, shape (windows,), seconds
    probs : np.ndarray, shape (windows, classes)
    usable : np.ndarray of bool, shape (windows,); False where no features
    duration_s : float
    """
    rate = classifier.config.sample_rate
    return stream_probabilities(classifier, features.stream_audio(path, rate),
                                window_s=window_s, hop_s=hop_s, batch=batch)


def classified_windows(classifier, blocks, *, window_s, hop_s, batch=64):
    """The windows of a stream of float32 sample blocks (at the model's
    sample rate), classified ``batch`` at a time (1: each as soon as it is
    complete, for live listening).

    Yields
    ------
    (start, n_samples, probs, usable), in order: ``probs`` shape (classes,),
    all zeros for a window without features (silence), where ``usable`` is
    False.
    """
    rate = classifier.config.sample_rate
    window, hop = int(window_s * rate), int(hop_s * rate)
    pending = []  # (start, n_samples, feature row or None), classified together

    def classified():
        rows = [row for *_, row in pending if row is not None]
        probs = iter(classifier.probabilities(np.stack(rows)) if rows else ())
        done = [(start, n, next(probs) if row is not None
                 else np.zeros(len(classifier.labels), np.float32), row is not None)
                for start, n, row in pending]
        pending.clear()
        return done

    for start, samples in stream_windows(blocks, window, hop, classifier.config.window_alignment):
        try:
            row = features.features_from_audio(samples, classifier.config)
        except features.SilentAudio:  # a silent window is "no event", not an error
            row = None
        except features.TooShort:
            if start == 0:  # the whole recording is too short to describe
                raise
            row = None  # a last, partial window: nothing more to classify
        except features.FeatureError as err:  # NaN or out-of-range samples: a fault
            raise features.FeatureError(f"{err.reason} (the window at {start / rate:.2f} s)",
                                        err.path) from None
        pending.append((start, len(samples), row))
        if len(pending) >= batch:
            yield from classified()
    yield from classified()


def stream_probabilities(classifier, blocks, *, window_s, hop_s, batch=64):
    """:func:`window_probabilities` of a stream of float32 sample blocks at
    the model's sample rate; windows are classified ``batch`` at a time."""
    starts, probs, usable, counted = [], [], [], [0]

    def counting(blocks):  # the last window may end before the stream (on the frame grid)
        for block in blocks:
            counted[0] += len(block)
            yield block

    for start, n, row, ok in classified_windows(classifier, counting(blocks), window_s=window_s,
                                                hop_s=hop_s, batch=batch):
        starts.append(start)
        probs.append(row)
        usable.append(ok)
    total, rate = counted[0], classifier.config.sample_rate
    centres = window_centres(starts, int(window_s * rate), total, rate)
    return centres, np.array(probs, np.float32), np.array(usable), total / rate


# ----------------------------------------------------------------------------
# Event settings: stored with the model, overridden from the command line.

def default_events(*, window_s, hop_s, smooth_windows, threshold, min_event_s, background):
    """The ``events`` section train_16k.py stores in the model metadata,
    checked (PipelineError naming the setting)."""
    events = {"window_s": float(window_s), "hop_s": float(hop_s),
              "smooth_windows": smooth_windows, "threshold": float(threshold),
              "min_event_s": float(min_event_s),
              "background": settings.parse_list(background, str, "background_classes")
              if isinstance(background, str) else list(background)}
    _check_events(events, "the settings", option_names=True)
    return events


def _check_events(events, source, option_names=False):
    def fail(key, expected):
        name = (f"--{key}" if key != "background" else "--background_classes") \
            if option_names else key
        raise PipelineError(f"{source}: {name}={events.get(key)!r}: expected {expected}")

    def number(key):
        value = events.get(key)
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)

    if not (number("window_s") and 0 < events["window_s"] <= 3600):
        fail("window_s", "a window length in (0, 3600] seconds")
    if not (number("hop_s") and MIN_HOP_S <= events["hop_s"] <= events["window_s"]):
        fail("hop_s", f"a step in [{MIN_HOP_S:g}, window_s] seconds")
    if not (isinstance(events.get("smooth_windows"), int) and 1 <= events["smooth_windows"] <= 1000):
        fail("smooth_windows", "a whole number of windows in [1, 1000]")
    if "threshold" in events and not (number("threshold") and 0 <= events["threshold"] <= 1):
        fail("threshold", "a probability in [0, 1]")
    if not (number("min_event_s") and 0 <= events["min_event_s"] <= 3600):
        fail("min_event_s", "a duration in [0, 3600] seconds")
    if not (isinstance(events.get("background"), list)
            and all(isinstance(b, str) for b in events["background"])):
        fail("background", "a list of class names")


def stored_events(meta, source):
    """The model's ``events`` section, checked."""
    events = meta.get("events")
    if not isinstance(events, dict) or not set(EVENT_KEYS) <= set(events):
        raise PipelineError(f"{source}: the model metadata has no event settings (trained "
                            "before they were stored with the model). Retrain with "
                            "`python train_16k.py`.")
    _check_events(events, source)
    return events


def check_calibration(calibration, meta, source):
    """The model's ``calibration`` section (from calibrate.py), checked: a
    tampered or outdated one is a PipelineError, never a traceback."""
    rerun = "Run `python calibrate.py` again."
    if not isinstance(calibration, dict):
        raise PipelineError(f"{source}: the calibration section is not an object. {rerun}")
    needed = ("thresholds", "smooth_windows", "min_event_s", "window_s", "hop_s",
              "feature_version", "background")
    missing = [k for k in needed if k not in calibration]
    if missing:
        raise PipelineError(f"{source}: the calibration lacks {', '.join(missing)} (made by an "
                            f"older calibrate.py, or edited). {rerun}")
    _check_events(calibration, source)
    thresholds = calibration["thresholds"]
    if not (isinstance(thresholds, dict) and all(
            k in meta["labels"] and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and 0 <= v <= 1 for k, v in thresholds.items())):
        raise PipelineError(f"{source}: the calibrated thresholds {thresholds!r} are not "
                            f"probabilities of the model's classes {meta['labels']}. {rerun}")


def event_settings(meta, *, window_s=None, hop_s=None, smooth_windows=None, threshold=None,
                   thresholds="", min_event_s=None, background=None, use_calibration=True,
                   source="the model"):
    """The EventSettings to run: the model's stored ones, with calibrate.py's
    choice (when the model has one, for this window and hop) on top, and
    then what the caller gives (None: not given).

    Parameters
    ----------
    meta : dict
        Model metadata (:func:`pipeline.artifacts.load_model_metadata`).
    threshold : float, optional
        One threshold for every event class; replaces the calibrated ones.
    thresholds : str
        Per class, ``"alarm=0.5,water=0.7"``; wins over everything.
    background : str, optional
        Comma-separated classes that never form events.
    use_calibration : bool
        False: the model's training defaults alone (what calibrate.py
        starts from).

    Raises
    ------
    PipelineError
        When a setting is out of range, or the calibrated thresholds were
        chosen for another window, hop or feature version and no threshold
        was given instead.
    """
    events = dict(stored_events(meta, source))
    calibration = meta.get("calibration") if use_calibration else None
    given = {"window_s": window_s, "hop_s": hop_s}
    events.update({k: v for k, v in given.items() if v is not None})
    if calibration is not None:
        check_calibration(calibration, meta, source)
        fits = (calibration["window_s"] == events["window_s"]
                and calibration["hop_s"] == events["hop_s"]
                and calibration["feature_version"] == meta["feature_config"].version)
        if fits:
            events.update({k: calibration[k] for k in ("smooth_windows", "min_event_s",
                                                       "background")})
        elif threshold is None:
            raise PipelineError(
                f"{source}: its thresholds were calibrated for {calibration['window_s']:g} s "
                f"windows every {calibration['hop_s']:g} s (feature version "
                f"{calibration['feature_version']}), not {events['window_s']:g} s every "
                f"{events['hop_s']:g} s (version {meta['feature_config'].version}). Run "
                f"`python calibrate.py --window_s={events['window_s']:g} "
                f"--hop_s={events['hop_s']:g}`, or pass --threshold to use no calibration.")
        else:
            calibration = None
    overrides = {"smooth_windows": smooth_windows, "min_event_s": min_event_s,
                 "threshold": threshold}
    events.update({k: v for k, v in overrides.items() if v is not None})
    if background is not None:
        events["background"] = settings.parse_list(background, str, "background_classes")
    _check_events(events, source if all(v is None for v in overrides.values()) else
                  "the settings", option_names=True)
    labels = meta["labels"]
    per_class = {label: events["threshold"] for label in labels}
    if calibration is not None and threshold is None:
        per_class.update(calibration["thresholds"])
    per_class = parse_thresholds(thresholds, labels, per_class)
    return EventSettings(window_s=events["window_s"], hop_s=events["hop_s"],
                         smooth_windows=events["smooth_windows"], thresholds=per_class,
                         min_event_s=float(events["min_event_s"]),
                         background=frozenset(events["background"]))


def parse_thresholds(text, labels, defaults):
    """'alarm=0.5,water=0.7' -> {label: threshold} for every label; labels
    not named keep their value in ``defaults``."""
    result = {label: defaults[label] for label in labels}
    for item in settings.parse_list(text, str, "thresholds"):
        name, _, value = item.partition("=")
        if name not in result:
            raise PipelineError(f"--thresholds: unknown class {name!r}; the model has {labels}")
        try:
            result[name] = float(value)
        except ValueError:
            raise PipelineError(f"--thresholds: {item!r} is not class=number") from None
    outside = {k: v for k, v in result.items() if not 0 <= v <= 1}
    if outside:
        raise PipelineError(f"--thresholds: {outside} outside [0, 1]; a threshold is a "
                            "probability")
    return result


def classify_file(classifier, path, events):
    """Predicted class and probabilities of one file, plus events and the
    per-window timeline for a recording longer than a window.

    Parameters
    ----------
    classifier : Classifier
    path : str or Path
    events : EventSettings
    """
    result = {"path": str(path), "class": None, "probability": None, "error": ""}
    rate = classifier.config.sample_rate
    try:
        if classifier.whole_clip or features.audio_duration(path) <= events.window_s:
            y = features.load_audio(path, rate)
            result["duration_s"] = round(y.size / rate, 3)
            probs = classifier.probabilities(features.features_from_audio(y, classifier.config))[0]
        else:
            centres, window_probs, usable, duration = window_probabilities(
                classifier, path, window_s=events.window_s, hop_s=events.hop_s)
            result["duration_s"] = round(duration, 3)
            if not usable.any():
                raise features.SilentAudio("every window is silent")
            smoothed = smooth(window_probs, events.smooth_windows)
            probs = window_probs[usable].mean(axis=0)
            result["events"] = find_events(centres, smoothed, classifier.labels,
                                           events.thresholds, min_duration=events.min_event_s,
                                           hop_s=events.hop_s, background=events.background)
            result["_timeline"] = (centres, smoothed)
    except features.FeatureError as err:
        result["error"] = err.reason
        result["_silent"] = isinstance(err, features.SilentAudio)  # no sound: no event
        return result
    best = classifier.decide(probs)
    result.update({"class": classifier.labels[best], "probability": float(probs[best]),
                   "probabilities": {k: float(p) for k, p in zip(classifier.labels, probs)}})
    return result
