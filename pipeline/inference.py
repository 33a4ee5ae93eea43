"""Running a trained model: a classifier that computes its own features,
per-window probabilities of long recordings, and one file's class and
events as predict.py gives them (the event settings that travel with the
model: :mod:`pipeline.event_settings`)."""

from pathlib import Path

import numpy as np

import features
from pipeline import artifacts, open_set
from pipeline.errors import PipelineError
from pipeline.events import find_events, smooth, stream_windows, window_centres
from pipeline.standardisation import standardise

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
