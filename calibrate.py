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
import predict
from pipeline import artifacts, clips, files, settings
from pipeline.errors import PipelineError, run_script
from pipeline.event_metrics import onset_delays
from pipeline.events import find_events, smooth

MODEL = "models/model_16k_int8.tflite"  # the model to calibrate (.tflite or .keras)
DATASET = "data/dataset_16k.npz"  # gives the labels of the model's saved test split
DATA_DIR = None                # labelled clips (a folder per class) instead of the test split
MANIFEST = None                # or a manifest of them
RECORDINGS = None              # folder of long recordings with Audacity label files, added
STREAM_HOURS = 1.0             # simulated hours per signal-to-noise ratio
SNRS_DB = "0,10,20"            # event level above the background's RMS, dB
EVENT_GAP_S = 60.0             # mean gap between simulated events, seconds
SEGMENT_S = 600.0              # streams are simulated in independent pieces of this length
TARGET_FA_PER_HOUR = 1.0       # false activations per hour the chosen thresholds may give
SMOOTH_CHOICES = "1,3,5"       # moving averages tried (windows)
MIN_EVENT_CHOICES = "0.5,1,2"  # minimum event durations tried (seconds)
STORE = True                   # store the choice with the model (and its C header)
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


_WORKER = {}  # per process: the classifier and the clips' audio, loaded once


def segment_probabilities(model, clip_list, background, snr_db, seconds, gap_s, seed, events):
    """One simulated segment: its window centres, class probabilities, the
    true events [(start_s, end_s, label)] and its length in seconds."""
    from pipeline.streams import plan_stream, stream_blocks
    if _WORKER.get("model") != model:
        _WORKER.clear()
        _WORKER.update(model=model, classifier=predict.Classifier(model), audio={})
    classifier, audio = _WORKER["classifier"], _WORKER["audio"]
    rate = classifier.config.sample_rate
    for path, _ in clip_list:
        if path not in audio:
            audio[path] = features.load_audio(path, rate)
    event_clips = [(audio[p], label) for p, label in clip_list if label not in background]
    backgrounds = [audio[p] for p, label in clip_list if label in background]
    planned, total, order = plan_stream([len(a) for a, _ in event_clips], len(backgrounds),
                                        seconds, gap_s, rate, seed)
    blocks = stream_blocks(backgrounds, [a for a, _ in event_clips], planned, total, order,
                           snr_db)
    centres, probs, _, _ = predict.stream_probabilities(classifier, blocks, rate,
                                                        events.window_s, events.hop_s)
    truth = [(at / rate, (at + len(event_clips[k][0])) / rate, event_clips[k][1])
             for at, k in planned]
    return centres, probs, truth, total / rate


def simulated_segments(cfg, clip_list, events):
    """Every segment of every SNR's stream, computed in parallel."""
    import joblib
    from tqdm import tqdm
    snrs = settings.parse_list(cfg.snrs_db, float, "snrs_db")
    n = max(1, math.ceil(cfg.stream_hours * 3600 / cfg.segment_s))
    seconds = cfg.stream_hours * 3600 / n
    specs = [(snr, k) for snr in snrs for k in range(n)]
    calls = (joblib.delayed(segment_probabilities)(
        str(cfg.model), clip_list, events.background, snr, seconds, cfg.event_gap_s,
        [cfg.seed, int(round(snr * 10)) + 1000, k], events) for snr, k in specs)
    return list(tqdm(joblib.Parallel(n_jobs=cfg.jobs, return_as="generator")(calls),
                     total=len(specs), desc="streams", unit="segment", disable=None,
                     leave=False))


def recording_segments(folder, classifier, events):
    """Recordings labelled in Audacity as segments (centres, probs, truth, seconds)."""
    from pipeline.labels import labelled_recordings
    segments = []
    for path, labelled in labelled_recordings(folder, classifier.labels):
        truth = [(e.start_s, e.end_s, e.label) for e in labelled
                 if e.label not in events.background]
        centres, probs, _, seconds = predict.window_probabilities(
            classifier, path, classifier.config.sample_rate, events.window_s, events.hop_s)
        segments.append((centres, probs, truth, seconds))
    return segments


# ----------------------------------------------------------------------------
# The sweep and the choice.

def sweep(segments, labels, event_classes, smooth_choices, min_event_choices, hop_s,
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
                        found = find_events(centres, sm, labels, {label: threshold}, min_event,
                                            hop_s, others) if len(sm) else []
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


def best_threshold(rows, target):
    """The row with the highest recall among those within ``target`` false
    activations per hour (then the fewest false activations, then the
    highest threshold: the safest of equals); else the one with the fewest
    false activations. Returns (row, met)."""
    within = [r for r in rows if r["false_per_hour"] <= target and not math.isnan(r["recall"])]
    if within:
        return max(within, key=lambda r: (r["recall"], -r["false_per_hour"], r["threshold"])), True
    return min(rows, key=lambda r: (r["false_per_hour"], -r["recall"])), False


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

def report_text(key, chosen, hours, target, n_events, distinct_s):
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


def plot_det(results, key, chosen, target, report_dir):
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


def store(model_path, calibration):
    """The choice in the model metadata, and the device header regenerated
    with it (its checksum updated), so predict.py and the device agree."""
    import model_conv
    paths = artifacts.model_paths(Path(model_path).parent)
    raw = files.read_json(paths["meta"], "model metadata", "python train_16k.py")
    raw["calibration"] = calibration
    meta = artifacts.load_model_metadata(paths["meta"].parent)
    meta["calibration"] = calibration
    if paths["frontend_header"].is_file() and "conversion" in raw:
        model_conv.write_frontend_header(paths, meta)
        raw["conversion"]["sha256"]["frontend_header"] = files.file_sha256(
            paths["frontend_header"])
    files.write_json(paths["meta"], raw)


def main(argv=None):
    cfg = settings.parse_settings(globals(), argv)
    started = time.perf_counter()
    settings.check_settings(cfg, stream_hours=settings.at_least(0),
                            segment_s=(lambda v: v >= 10, "at least 10 seconds"),
                            event_gap_s=settings.at_least(0),
                            target_fa_per_hour=settings.at_least(0), jobs=settings.JOBS_RULE)
    smooth_choices = settings.parse_list(cfg.smooth_choices, int, "smooth_choices")
    min_event_choices = settings.parse_list(cfg.min_event_choices, float, "min_event_choices")
    if not smooth_choices or min(smooth_choices) < 1 or not min_event_choices:
        raise PipelineError("--smooth_choices and --min_event_choices need positive values")
    classifier = predict.Classifier(cfg.model)
    labels = classifier.labels
    events = predict.event_settings(settings.parse_settings(vars(predict), []), labels)
    event_classes = [x for x in labels if x not in events.background]
    if not event_classes or len(event_classes) == len(labels):
        raise PipelineError(f"calibration needs event classes and background classes; "
                            f"predict.py's BACKGROUND_CLASSES={sorted(events.background)} and "
                            f"the model has {labels}")
    if cfg.store:
        files.check_writable("--model", Path(cfg.model).parent)
    files.check_writable("--report_dir", cfg.report_dir)

    segments, distinct_s = [], 0.0
    if cfg.stream_hours > 0:
        clip_list = evaluation_clips(cfg, classifier)
        kinds = {label in events.background for _, label in clip_list}
        if kinds != {True, False}:
            raise PipelineError("the clips need both event classes and background classes "
                                f"({sorted(events.background)}) to build streams")
        segments += simulated_segments(cfg, clip_list, events)
        distinct_s += sum(features.audio_duration(p) for p, label in clip_list
                          if label in events.background)
    if cfg.recordings:
        recorded = recording_segments(cfg.recordings, classifier, events)
        segments += recorded
        distinct_s += sum(s[3] for s in recorded)
    if not segments:
        raise PipelineError("nothing to calibrate on: --stream_hours=0 and no --recordings")
    results, hours = sweep(segments, labels, event_classes, smooth_choices, min_event_choices,
                           events.hop_s, predict.ONSET_TOLERANCE_S)
    key, chosen = choose(results, cfg.target_fa_per_hour)
    n_events = sum(len(s[2]) for s in segments)
    text = report_text(key, chosen, hours, cfg.target_fa_per_hour, n_events, distinct_s)
    calibration = {"thresholds": {label: row["threshold"] for label, (row, _) in chosen.items()},
                   "smooth_windows": int(key[0]), "min_event_s": float(key[1]),
                   "target_fa_per_hour": cfg.target_fa_per_hour, "hours": hours,
                   "distinct_background_s": distinct_s,
                   "per_class": {label: {**row, "target_met": met}
                                 for label, (row, met) in chosen.items()}}
    report_dir = Path(cfg.report_dir)
    files.write_text(report_dir / "calibration.txt", text)
    files.write_json(report_dir / "calibration.json", {
        **calibration, "sweep": {f"smooth={w},min_event={m:g}": per_class
                                 for (w, m), per_class in results.items()}})
    plots = plot_det(results, key, chosen, cfg.target_fa_per_hour, report_dir)
    if cfg.store:
        store(cfg.model, calibration)
    print(text, end="")
    print(f"reports: {report_dir / 'calibration.txt'}, {', '.join(map(str, plots))}")
    print("stored with the model: predict.py and the device header use these settings"
          if cfg.store else "not stored (--store=false)")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_script(main)
