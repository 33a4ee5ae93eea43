"""Stage 4: classify clips and find events in long recordings.

    python predict.py clip.wav folder/                 # class + probability per file
    python predict.py --all --csv=out.csv rec.wav      # every class's probability, saved
    python predict.py --timeline=rec.png long_rec.wav  # probabilities over time + events
    python predict.py --evaluate=DATA_DIR              # accuracy on a labelled folder

Uses the int8 .tflite through LiteRT by default and never imports TensorFlow
for it; --model=models/model_16k.keras uses Keras instead. Labels and the
feature configuration come from the model's metadata (model_16k.json).
A recording longer than WINDOW_S is cut into overlapping windows whose class
probabilities are smoothed and turned into events.
"""

import csv
import sys
from pathlib import Path

import numpy as np

import artifacts
import features
import settings
from artifacts import PipelineError

MODEL = "models/model_16k_int8.tflite"  # .tflite (LiteRT, no TensorFlow) or .keras
WINDOW_S = 2.0                 # window length for long recordings, in seconds
HOP_S = 1.0                    # step between windows, in seconds
SMOOTH_WINDOWS = 3             # moving average over this many windows
THRESHOLD = 0.5                # smoothed probability that starts an event
THRESHOLDS = ""                # per-class thresholds, e.g. "alarm=0.5,water=0.7"
MIN_EVENT_S = 1.0              # shorter events are dropped
BACKGROUND_CLASSES = "other"   # classes that never form events (comma-separated)
ALL = False                    # print every class's probability
CSV = None                     # save per-file results (and events) as CSV
JSON = None                    # save results as JSON (with --evaluate: the metrics)
TIMELINE = None                # PNG of probabilities over time (first long recording)
EVALUATE = None                # labelled folder (one sub-folder per class) to score
REPORT_DIR = "reports"         # where --evaluate saves its confusion matrix


# ----------------------------------------------------------------------------
# The model: LiteRT for .tflite, Keras for .keras; both take model inputs.

class Classifier:
    """A trained model plus its metadata; ``probabilities(features)``."""

    def __init__(self, model_path):
        path = Path(model_path)
        if not path.is_file():
            made_by = "python train_16k.py" if path.suffix == ".keras" else "python model_conv.py"
            raise PipelineError(f"{path}: model not found. Run `{made_by}` first "
                                "(or pass --model=PATH).")
        self.meta = artifacts.load_model_metadata(path.parent)
        self.labels = self.meta["labels"]
        self.config = self.meta["feature_config"]
        if path.suffix == ".keras":
            artifacts.import_tensorflow()
            import keras
            model = keras.models.load_model(path, safe_mode=True)
            self._run = lambda x: model.predict(x, verbose=0)
        elif path.suffix == ".tflite":
            from tflite_model import TFLiteModel
            self._run = TFLiteModel(path).predict_proba
        else:
            raise PipelineError(f"{path}: expected a .tflite or .keras model")

    def probabilities(self, feature_rows):
        """Class probabilities (rows sum to about 1) for feature vectors."""
        return self._run(artifacts.model_inputs(np.atleast_2d(feature_rows), self.meta))


# ----------------------------------------------------------------------------
# Windows, smoothing and events.

def window_starts(n_samples, window, hop):
    """Start samples of overlapping windows covering the whole recording
    (the last one ends at the recording's end)."""
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def window_probabilities(classifier, y, sample_rate, window_s, hop_s):
    """Per-window class probabilities; silent windows get all zeros.

    Returns
    -------
    centres : np.ndarray, seconds
    probs : np.ndarray, shape (windows, classes)
    """
    window, hop = int(window_s * sample_rate), int(hop_s * sample_rate)
    starts = window_starts(y.size, window, hop)
    rows, usable = [], []
    for start in starts:
        try:
            rows.append(features.features_from_audio(y[start:start + window], classifier.config))
            usable.append(True)
        except features.FeatureError:  # a silent window is "no event", not an error
            usable.append(False)
    probs = np.zeros((len(starts), len(classifier.labels)), np.float32)
    if rows:
        probs[np.array(usable)] = classifier.probabilities(np.stack(rows))
    centres = np.array([(s + min(window, y.size - s) / 2) / sample_rate for s in starts])
    return centres, probs, np.array(usable)


def smooth(probs, width):
    """Centred moving average over ``width`` windows (fewer at the edges)."""
    half = max(int(width), 1) // 2
    return np.stack([probs[max(0, i - half):i + half + 1].mean(axis=0)
                     for i in range(len(probs))])


def find_events(centres, probs, labels, thresholds, min_duration, hop_s, background):
    """Runs of windows whose smoothed probability reaches the class threshold.

    An event spans from half a hop before its first window's centre to half
    a hop after its last; events shorter than ``min_duration`` are dropped.
    """
    events = []
    for c, label in enumerate(labels):
        if label in background:
            continue
        above = np.concatenate([[False], probs[:, c] >= thresholds[label], [False]])
        edges = np.flatnonzero(np.diff(above.astype(int)))
        for first, last in zip(edges[::2], edges[1::2] - 1):
            start = max(0.0, centres[first] - hop_s / 2)
            end = centres[last] + hop_s / 2
            if end - start >= min_duration:
                run = probs[first:last + 1, c]
                events.append({"class": label, "start_s": round(float(start), 3),
                               "end_s": round(float(end), 3),
                               "peak_probability": float(run.max()),
                               "mean_probability": float(run.mean())})
    return sorted(events, key=lambda e: e["start_s"])


def parse_thresholds(text, labels, default):
    """'alarm=0.5,water=0.7' -> {label: threshold} for every label."""
    result = {label: default for label in labels}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in result:
            raise PipelineError(f"--thresholds: unknown class {name!r}; the model has {labels}")
        try:
            result[name] = float(value)
        except ValueError:
            raise PipelineError(f"--thresholds: {item!r} is not class=number") from None
    return result


# ----------------------------------------------------------------------------
# One file -> one result dict.

def classify_file(classifier, path, cfg, thresholds, background):
    """Predicted class and probabilities of one file, plus events and the
    per-window timeline for a recording longer than a window."""
    result = {"path": str(path), "class": None, "probability": None, "error": ""}
    try:
        y = features.load_audio(path, classifier.config["sample_rate"])
        rate = classifier.config["sample_rate"]
        result["duration_s"] = round(y.size / rate, 3)
        if y.size <= int(cfg.window_s * rate):
            probs = classifier.probabilities(features.features_from_audio(y, classifier.config))[0]
        else:
            centres, window_probs, usable = window_probabilities(classifier, y, rate,
                                                                 cfg.window_s, cfg.hop_s)
            if not usable.any():
                raise features.FeatureError("every window is silent")
            smoothed = smooth(window_probs, cfg.smooth_windows)
            probs = window_probs[usable].mean(axis=0)
            result["events"] = find_events(centres, smoothed, classifier.labels, thresholds,
                                           cfg.min_event_s, cfg.hop_s, background)
            result["_timeline"] = (centres, smoothed)
    except features.FeatureError as err:
        result["error"] = str(err).replace(f"{path}: ", "")
        return result
    best = int(np.argmax(probs))
    result.update({"class": classifier.labels[best], "probability": float(probs[best]),
                   "probabilities": {k: float(p) for k, p in zip(classifier.labels, probs)}})
    return result


def expand_paths(paths):
    """Files as given, and audio files found recursively in folders."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if features.is_audio_file(p))
        else:
            found.append(path)
    return found


def print_result(result, show_all):
    if result["error"]:
        print(f"{result['path']}: error: {result['error']}")
        return
    line = f"{result['path']}: {result['class']} ({result['probability']:.2f})"
    if show_all:
        line += "  " + "  ".join(f"{k}={p:.2f}" for k, p in result["probabilities"].items())
    print(line)
    for event in result.get("events", []):
        print(f"    event {event['class']:<8} {event['start_s']:7.2f}-{event['end_s']:7.2f} s"
              f"  peak {event['peak_probability']:.2f}  mean {event['mean_probability']:.2f}")


def write_csv(path, results, labels):
    """One row per file (with an error column) and one per event."""
    header = ["path", "class", "probability", *[f"p_{k}" for k in labels],
              "event_start_s", "event_end_s", "event_peak", "error"]
    rows = []
    for r in results:
        probs = [r.get("probabilities", {}).get(k, "") for k in labels]
        rows.append([r["path"], r["class"] or "", r["probability"] or "", *probs, "", "", "",
                     r["error"]])
        for e in r.get("events", []):
            rows.append([r["path"], e["class"], e["mean_probability"], *[""] * len(labels),
                         e["start_s"], e["end_s"], e["peak_probability"], ""])
    with artifacts.atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([header, *rows])


def evaluate(classifier, cfg, thresholds, background):
    """Accuracy, macro-F1 and confusion matrix on a labelled folder."""
    import evaluation
    import make_dataset_16k
    import plots
    clips, warnings = make_dataset_16k.clips_from_folder(cfg.evaluate)
    for warning in warnings:
        print(f"warning: {warning}")
    unknown = sorted({label for _, label, _ in clips} - set(classifier.labels))
    if unknown:
        raise PipelineError(f"{cfg.evaluate}: folders {unknown} are not classes of the model "
                            f"({classifier.labels}); rename or remove them")
    y_true, y_pred, failed = [], [], 0
    for path, label, _ in clips:
        result = classify_file(classifier, path, cfg, thresholds, background)
        if result["error"]:
            print(f"{path}: error: {result['error']}")
            failed += 1
            continue
        y_true.append(classifier.labels.index(label))
        y_pred.append(classifier.labels.index(result["class"]))
    if not y_true:
        raise PipelineError(f"{cfg.evaluate}: no clip could be classified")
    metrics = evaluation.classification_metrics(y_true, y_pred, classifier.labels)
    print(evaluation.report_text(metrics, f"evaluation on {cfg.evaluate} ({len(y_true)} clips)"),
          end="")
    out_png = Path(cfg.report_dir) / "confusion_evaluate.png"
    plots.confusion_matrices([(f"{Path(cfg.model).name} on {Path(cfg.evaluate).name}",
                               metrics["confusion_matrix"])], classifier.labels, out_png)
    print(f"saved {out_png}")
    if cfg.json:
        artifacts.write_json(cfg.json, metrics)
    return 1 if failed else 0


def main(argv=None):
    parser = settings.parser_from_constants(globals())
    parser.add_argument("paths", nargs="*", help="audio files or folders (searched recursively)")
    cfg = settings.parse_settings(globals(), argv, parser)
    if cfg.window_s <= 0 or not 0 < cfg.hop_s <= cfg.window_s:
        raise PipelineError("--window_s must be positive and 0 < --hop_s <= --window_s")
    classifier = Classifier(cfg.model)
    thresholds = parse_thresholds(cfg.thresholds, classifier.labels, cfg.threshold)
    background = {c.strip() for c in cfg.background_classes.split(",") if c.strip()}
    if cfg.evaluate:
        return evaluate(classifier, cfg, thresholds, background)
    if not cfg.paths:
        raise PipelineError("no input: give audio files or folders, or --evaluate=DIR")

    results = []
    for path in expand_paths(cfg.paths):
        result = classify_file(classifier, path, cfg, thresholds, background)
        print_result(result, cfg.all)
        sys.stdout.flush()
        results.append(result)
    timeline = next((r for r in results if "_timeline" in r), None)
    if cfg.timeline and timeline:
        import plots
        plots.timeline(timeline["_timeline"], classifier.labels, timeline["events"],
                       timeline["path"], cfg.timeline)
    elif cfg.timeline:
        print(f"note: no recording longer than {cfg.window_s} s, so no timeline was drawn")
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    if cfg.csv:
        write_csv(cfg.csv, public, classifier.labels)
    if cfg.json:
        artifacts.write_json(cfg.json, {"model": str(cfg.model), "labels": classifier.labels,
                                        "results": public})
    failed = sum(1 for r in results if r["error"])
    if failed:
        print(f"{failed} of {len(results)} files failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    artifacts.run_script(main)
