"""The event settings that travel with a model: window, hop, smoothing,
thresholds, minimum duration and background classes.

predict.py, calibrate.py and model_conv.py (the device header) all read
them here, so a window, a threshold or a smoothing width means the same in
each. They are data stored with the model: train_16k.py writes the defaults
(``events`` in model_16k.json), calibrate.py the calibrated choice
(``calibration``); a stage's own constants only override them when given on
its command line.
"""

import math

import features
from pipeline import settings
from pipeline.errors import PipelineError
from pipeline.events import EventSettings

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
