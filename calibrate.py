"""Stage 5: calibrate the int8 model for continuous listening.

    python calibrate.py                          # on the test split saved by train_16k.py
    python calibrate.py --data_dir=held_out/ --recordings=my_kitchen/   # your own audio

Builds long test streams from labelled clips the model did not train on:
event clips (every class but the background ones) at known times over
background made of the background classes' clips, at several
signal-to-noise ratios; recordings labelled in Audacity (rec.wav + rec.txt)
join them. Runs predict.py's windows, smoothing and events over the streams,
sweeps the per-class thresholds, the smoothing and the minimum event
duration, and picks the settings that keep false activations under
TARGET_FA_PER_HOUR with the highest recall. They are stored with the model
(predict.py and the device header use them by default) and reported in
reports/calibration.{txt,json} and a DET-style plot per class.
"""

import math
import time
from pathlib import Path

import numpy as np

import features
from pipeline import artifacts, clips, files, settings, streams
from pipeline.calibration import best_threshold, store
from pipeline.errors import PipelineError, run_script
from pipeline.event_metrics import onset_delays
from pipeline.event_settings import check_device_smoothing, event_settings
from pipeline.events import find_events, smooth
from pipeline.inference import Classifier, check_listens, model_path, window_probabilities

MODEL_DIR = "models"           # the model folder that train_16k.py and model_conv.py wrote
MODEL = None                   # the model to calibrate (.tflite or .keras); default: MODEL_DIR's int8 model
DATASET = "data/dataset_16k.npz"  # gives the labels of the model's saved test split
DATA_DIR = None                # labelled clips (a folder per class) instead of the test split
MANIFEST = None                # or a manifest of them
RECORDINGS = None              # folder of long recordings with Audacity label files, added
WINDOW_S: float = None         # window length the thresholds are chosen for, seconds; default: the model's
HOP_S: float = None            # step between windows, seconds; default: the model's
BACKGROUND_CLASSES = None      # classes that are background and never events (comma-separated); default: the model's
STREAM_HOURS = 1.0             # simulated hours per signal-to-noise ratio
SNRS_DB = "0,10,20"            # event level above the background's RMS, dB
EVENT_GAP_S = 60.0             # mean gap between simulated events, seconds
SEGMENT_S = 600.0              # streams are simulated in independent pieces of this length
TARGET_FA_PER_HOUR = 1.0       # false activations per hour the chosen thresholds may give
SMOOTH_CHOICES = "1,3,5"       # moving averages tried (windows)
MIN_EVENT_CHOICES = "0.5,1,2"  # minimum event durations tried (seconds)
ONSET_TOLERANCE_S = 1.0        # a detection overlapping a true event widened by this is right
MIN_BACKGROUND_MIN = 10.0      # below this many minutes of distinct background audio: report, do not store
STORE = "true"                 # "true": store when the data suffice; "force": store anyway; "false": report only
JOBS = -1                      # processes for the streams (-1 = all cores)
REPORT_DIR = "reports"         # calibration.txt/.json and the plots
SEED = 42                      # same clips + seed -> same streams and choice

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.01), 2)  # the sweep's grid


# ----------------------------------------------------------------------------
# Clips and streams.

def evaluation_clips(cfg, classifier):
    """(path, label) of the clips the streams are made of: --data_dir or
    --manifest, else the model's saved test split (labels from DATASET)."""
    if cfg.data_dir or cfg.manifest:
        found, _ = clips.list_clips(cfg.data_dir, cfg.manifest)
        return [(c.path, c.label) for c in found if c.label in classifier.labels]
    test = classifier.meta.get("split", {}).get("test", [])
    if not test:
        raise PipelineError("the model has no saved test split; pass --data_dir=CLIPS")
    data = artifacts.load_dataset(cfg.dataset)
    label_of = {p: data["label_names"][y] for p, y in zip(data["paths"], data["labels"])}
    missing = [p for p in test if p not in label_of or not Path(p).is_file()]
    if missing:
        raise PipelineError(f"{missing[0]}: a test clip of the model is missing from "
                            f"{cfg.dataset} or from disk; pass --data_dir=CLIPS")
    return [(p, label_of[p]) for p in test]


def simulated_segments(cfg, clip_list, events, model):
    """Every segment of every SNR's simulated stream, in parallel."""
    return streams.simulated_segments(
        model, clip_list, events, snrs_db=settings.parse_list(cfg.snrs_db, float, "snrs_db"),
        hours=cfg.stream_hours, segment_s=cfg.segment_s, gap_s=cfg.event_gap_s,
        seed=cfg.seed, jobs=cfg.jobs)


def recording_segments(folder, classifier, events):
    """Recordings labelled in Audacity as segments (centres, probs, truth, seconds)."""
    from pipeline.labels import labelled_recordings, merge_overlapping, within_recording
    segments = []
    for path, labelled in labelled_recordings(folder, classifier.labels):
        try:
            centres, probs, _, seconds = window_probabilities(
                classifier, path, window_s=events.window_s, hop_s=events.hop_s)
        except features.FeatureError as err:
            raise PipelineError(f"{path}: {err.reason}; fix or remove the recording") from None
        truth = [(e.start_s, e.end_s, e.label)
                 for e in merge_overlapping(within_recording(labelled, seconds, path))
                 if e.label not in events.background]
        segments.append((centres, probs, truth, seconds))
    return segments


# ----------------------------------------------------------------------------
# The sweep and the choice.

def sweep(segments, labels, event_classes, *, smooth_choices, min_event_choices, hop_s,
          tolerance_s):
    """Recall, false activations per hour and median detection delay of each
    event class at every (smoothing, minimum duration, threshold).

    Returns
    -------
    dict (smooth, min_event_s) -> class -> list of dict per threshold
    """
    hours = sum(s[3] for s in segments) / 3600
    results = {}
    for width in smooth_choices:
        smoothed = [smooth(p, width) if len(p) else p for _, p, _, _ in segments]
        for min_event in min_event_choices:
            per_class = {}
            for label in event_classes:
                others = set(labels) - {label}
                rows = []
                for threshold in THRESHOLDS:
                    tp = fp = fn = 0
                    delays = []
                    for (centres, _, truth, _), sm in zip(segments, smoothed):
                        found = find_events(centres, sm, labels, {label: threshold},
                                            min_duration=min_event, hop_s=hop_s,
                                            background=others) if len(sm) else []
                        ref = [t[:2] for t in truth if t[2] == label]
                        det = [(e["start_s"], e["end_s"]) for e in found]
                        matched = onset_delays(ref, det, tolerance_s)  # one per true positive
                        tp, fp = tp + len(matched), fp + len(det) - len(matched)
                        fn += len(ref) - len(matched)
                        delays += matched
                    rows.append({"threshold": float(threshold),
                                 "recall": tp / (tp + fn) if tp + fn else float("nan"),
                                 "false_per_hour": fp / hours, "events": tp + fn,
                                 "delay_s": float(np.median(delays)) if delays else None})
                per_class[label] = rows
            results[(width, min_event)] = per_class
    return results, hours


def choose(results, target):
    """(smoothing, min duration) with the best mean recall at the target,
    and each class's threshold there."""
    def score(key):
        chosen = [best_threshold(rows, target) for rows in results[key].values()]
        return (sum(met for _, met in chosen),
                float(np.mean([r["recall"] if not math.isnan(r["recall"]) else 0.0
                               for r, _ in chosen])), -key[0], -key[1])
    key = max(results, key=score)
    return key, {label: best_threshold(rows, target) for label, rows in results[key].items()}


# ----------------------------------------------------------------------------
# Reports and storing.

def report_text(key, chosen, *, hours, target, n_events, distinct_s):
    width, min_event = key
    lines = [f"calibration on {hours:.2f} h of stream ({n_events} events), target "
             f"{target:g} false activation(s) per hour",
             f"distinct background audio: {distinct_s / 60:.1f} min (simulated streams repeat "
             "it; labelled recordings count in full)",
             f"chosen: smoothing {width} window(s), minimum event {min_event:g} s",
             f"{'class':<12}{'threshold':>10}{'recall':>8}{'false/h':>9}{'delay s':>9}"
             f"{'events':>8}"]
    for label, (row, met) in chosen.items():
        delay = f"{row['delay_s']:.2f}" if row["delay_s"] is not None else "n/a"
        lines.append(f"{label:<12}{row['threshold']:>10.2f}{row['recall']:>8.3f}"
                     f"{row['false_per_hour']:>9.2f}{delay:>9}{row['events']:>8}"
                     + ("" if met else "  (target not met: fewest false activations)"))
    needed = 10 / target if target > 0 else float("inf")
    if hours < needed:
        lines.append(f"warning: {hours:.1f} h of stream is too short to measure "
                     f"{target:g} false activation(s) per hour: at least {needed:.3g} h are "
                     "needed (raise --stream_hours or add --recordings)")
    return "\n".join(lines) + "\n"


def plot_det(results, key, chosen, *, target, report_dir):
    """Per class: false activations per hour against miss rate, the chosen point marked."""
    import matplotlib.pyplot as plt

    from pipeline.plots import file_name_part, save_figure
    paths = []
    for label, rows in results[key].items():
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot([r["false_per_hour"] for r in rows], [1 - r["recall"] for r in rows], ".-")
        row, _ = chosen[label]
        ax.plot([row["false_per_hour"]], [1 - row["recall"]], "r*", markersize=14,
                label=f"chosen: threshold {row['threshold']:.2f}")
        ax.axvline(target, color="grey", linestyle="--", label=f"target: {target:g} per hour")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("false activations per hour")
        ax.set_ylabel("miss rate")
        ax.set_title(f"{label}: smoothing {key[0]}, min event {key[1]:g} s", fontsize=9)
        ax.legend()
        path = Path(report_dir) / f"calibration_{file_name_part(label)}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def storage_problems(chosen, distinct_s, min_background_min):
    """Why a calibration must not be stored: too little distinct background
    to measure false activations, a class with no events to measure recall
    on, a target that no threshold met, or a value that is not finite."""
    problems = []
    if distinct_s < min_background_min * 60:
        problems.append(f"only {distinct_s / 60:.1f} min of distinct background audio (at least "
                        f"{min_background_min:g} min, --min_background_min): the false "
                        "activation rate is not measured. Add --recordings of your place, or "
                        "more background clips")
    for label, (row, met) in chosen.items():
        if not row["events"]:
            problems.append(f"{label}: no {label} events in the streams, so no recall to choose "
                            "a threshold by")
        elif not met:
            problems.append(f"{label}: no threshold met the target (the lowest rate is "
                            f"{row['false_per_hour']:.2f} per hour)")
        if not all(math.isfinite(row[k]) for k in ("threshold", "false_per_hour")):
            problems.append(f"{label}: the sweep gave non-finite figures")
    return problems


def check_settings(cfg):
    """Every numeric setting in range, before any work."""
    settings.check_settings(
        cfg, stream_hours=settings.between(0, 1000),
        segment_s=settings.between(10, 86400), event_gap_s=settings.between(0, 86400),
        target_fa_per_hour=settings.between(0, 3600),
        onset_tolerance_s=settings.between(0, 60),
        min_background_min=settings.between(0, 10 ** 6), jobs=settings.JOBS_RULE)
    if cfg.store not in ("true", "false", "force"):
        raise PipelineError(f"--store={cfg.store!r}: expected true, false or force")
    smooth_choices = settings.parse_list(cfg.smooth_choices, int, "smooth_choices")
    min_event_choices = settings.parse_list(cfg.min_event_choices, float, "min_event_choices")
    snrs = settings.parse_list(cfg.snrs_db, float, "snrs_db")
    if not smooth_choices or not all(1 <= w <= 1000 for w in smooth_choices):
        raise PipelineError(f"--smooth_choices={cfg.smooth_choices!r}: expected whole numbers "
                            "of windows in [1, 1000]")
    if not min_event_choices or not all(0 <= m <= 3600 for m in min_event_choices):
        raise PipelineError(f"--min_event_choices={cfg.min_event_choices!r}: expected "
                            "durations in [0, 3600] seconds")
    if not snrs or not all(-60 <= x <= 60 for x in snrs):
        raise PipelineError(f"--snrs_db={cfg.snrs_db!r}: expected levels in [-60, 60] dB")
    return smooth_choices, min_event_choices


def main(argv=None):
    cfg = settings.parse_settings(globals(), argv)
    started = time.perf_counter()
    smooth_choices, min_event_choices = check_settings(cfg)
    model = model_path(cfg.model, cfg.model_dir)
    classifier = Classifier(model)
    check_listens(classifier, "calibration")
    labels = classifier.labels
    check_device_smoothing(smooth_choices, classifier.config,
                           f"--smooth_choices={cfg.smooth_choices}")
    events = event_settings(classifier.meta, window_s=cfg.window_s, hop_s=cfg.hop_s,
                            background=cfg.background_classes, use_calibration=False, source=model)
    event_classes = [x for x in labels if x not in events.background]
    if not event_classes or len(event_classes) == len(labels):
        raise PipelineError(f"calibration needs event classes and background classes; the "
                            f"background is {sorted(events.background)} (--background_classes) and "
                            f"the model has {labels}")
    if cfg.store != "false":
        files.check_writable("--model", model.parent)
    files.check_writable("--report_dir", cfg.report_dir)

    segments, distinct_s = [], 0.0
    if cfg.stream_hours > 0:
        clip_list = evaluation_clips(cfg, classifier)
        kinds = {label in events.background for _, label in clip_list}
        if kinds != {True, False}:
            raise PipelineError("the clips need both event classes and background classes "
                                f"({sorted(events.background)}) to build streams")
        segments += simulated_segments(cfg, clip_list, events, model)
        distinct_s += sum(features.audio_duration(p) for p, label in clip_list
                          if label in events.background)
    if cfg.recordings:
        recorded = recording_segments(cfg.recordings, classifier, events)
        segments += recorded
        distinct_s += sum(s[3] for s in recorded)
    if not segments:
        raise PipelineError("nothing to calibrate on: --stream_hours=0 and no --recordings")
    results, hours = sweep(segments, labels, event_classes, smooth_choices=smooth_choices,
                           min_event_choices=min_event_choices, hop_s=events.hop_s,
                           tolerance_s=cfg.onset_tolerance_s)
    key, chosen = choose(results, cfg.target_fa_per_hour)
    n_events = sum(len(s[2]) for s in segments)
    text = report_text(key, chosen, hours=hours, target=cfg.target_fa_per_hour,
                       n_events=n_events, distinct_s=distinct_s)
    calibration = {"thresholds": {label: row["threshold"] for label, (row, _) in chosen.items()},
                   "smooth_windows": int(key[0]), "min_event_s": float(key[1]),
                   "window_s": events.window_s, "hop_s": events.hop_s,
                   "feature_version": classifier.config.version,
                   "background": sorted(events.background),
                   "target_fa_per_hour": cfg.target_fa_per_hour, "hours": hours,
                   "distinct_background_s": distinct_s,
                   "onset_tolerance_s": cfg.onset_tolerance_s,
                   "per_class": {label: {**row, "target_met": met}
                                 for label, (row, met) in chosen.items()}}
    report_dir = Path(cfg.report_dir)
    files.write_text(report_dir / "calibration.txt", text)
    files.write_json(report_dir / "calibration.json", {
        **calibration, "sweep": {f"smooth={w},min_event={m:g}": per_class
                                 for (w, m), per_class in results.items()}})
    plots = plot_det(results, key, chosen, target=cfg.target_fa_per_hour, report_dir=report_dir)
    print(text, end="")
    print(f"reports: {report_dir / 'calibration.txt'}, {', '.join(map(str, plots))}")
    problems = storage_problems(chosen, distinct_s, cfg.min_background_min)
    status = 0
    if cfg.store == "false":
        print("not stored (--store=false)")
    elif problems and cfg.store != "force":
        print("not stored with the model, because:\n" + "".join(f"  - {p}\n" for p in problems)
              + "predict.py keeps the model's previous settings. Fix the above, or pass "
              "--store=force to store this choice anyway.")
        status = 1
    else:
        store(model, calibration)
        print("stored with the model: predict.py and the device header use these settings"
              + (" (forced past: " + "; ".join(problems) + ")" if problems else ""))
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return status


if __name__ == "__main__":
    run_script(main)
