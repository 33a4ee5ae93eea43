"""Stage 4: classify clips and find events in long recordings.

    python predict.py clip.wav folder/                 # class + probability per file
    python predict.py --all --csv=out.csv rec.wav      # every class's probability, saved
    python predict.py --timeline=rec.png long_rec.wav  # probabilities over time + events
    python predict.py --evaluate=DATA_DIR              # accuracy on a labelled folder
    python predict.py --evaluate_events=REC_DIR        # event scores on labelled recordings
    python predict.py --mine=HOUSEHOLD_DIR --into=data/clips/other   # hard negatives

Uses the int8 .tflite through LiteRT by default and never imports TensorFlow
for it; --model=models/model_16k.keras uses Keras instead. Labels and the
feature configuration come from the model's metadata (model_16k.json).
A recording longer than WINDOW_S is read as a stream (memory does not grow
with its length) and cut into overlapping windows whose class probabilities
are smoothed and turned into events. A clip's class follows the open-set
rule stored with the model: an event class that is not sure enough gives way
to the background class.
"""

import sys
from pathlib import Path

import features
from pipeline import clips, files, inference, settings
from pipeline.errors import PipelineError, run_script
from pipeline.event_settings import event_settings
from pipeline.events import stream_windows
from pipeline.inference import Classifier, model_path

MODEL_DIR = "models"           # the model folder that train_16k.py and model_conv.py wrote
MODEL = None                   # a .tflite (LiteRT, no TensorFlow) or .keras file; default: MODEL_DIR's int8 model
WINDOW_S: float = None         # window length for long recordings, seconds; default: the model's
HOP_S: float = None            # step between windows, seconds; default: the model's
SMOOTH_WINDOWS: int = None     # moving average over this many windows; default: the model's
THRESHOLD: float = None        # one threshold for every class, instead of the model's (calibrated) ones
THRESHOLDS = ""                # per-class thresholds, e.g. "alarm=0.5,water=0.7" (win over the rest)
MIN_EVENT_S: float = None      # shorter events are dropped; default: the model's
BACKGROUND_CLASSES = None      # classes that never form events (comma-separated); default: the model's
ALL = False                    # print every class's probability
CSV = None                     # save per-file results (and events) as CSV
JSON = None                    # save results as JSON (with --evaluate: the metrics)
TIMELINE = None                # PNG per long recording: spectrogram, probabilities, events (NAME_<recording>.png when several)
EVALUATE = None                # labelled folder (one sub-folder per class) to score
EVALUATE_EVENTS = None         # folder of recordings with Audacity label files (.txt) to score
ONSET_TOLERANCE_S = 1.0        # --evaluate_events: a detection overlapping a label widened by this is right
MINE = None                    # folder of recordings with no target events: save windows that fire
INTO = "data/clips/other"      # --mine: where those windows go (WAV clips and mined.csv)
REPORT_DIR = "reports"         # where --evaluate saves its confusion matrix
LISTEN = None                  # "mic": listen to the default microphone; or a recording, fed at --speed
SPEED = 1.0                    # --listen=RECORDING: this many times real time (0: as fast as possible)
SAVE_EVENTS = None             # --listen: folder where each event's audio is saved as 16-bit WAV
EVENT_CONTEXT_S = 1.0          # --save_events: seconds of audio kept before and after each event


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


def timeline_paths(out_png, recordings):
    """One PNG per recording: ``out_png`` itself for one, NAME_<stem>.png for several."""
    out_png = Path(out_png)
    if len(recordings) == 1:
        return [out_png]
    from pipeline.plots import file_name_part
    return [out_png.with_name(f"{out_png.stem}_{file_name_part(Path(p).stem)}{out_png.suffix}")
            for p in recordings]


def draw_timelines(classifier, results, events, out_png, *, labelled=None):
    """The timeline figure of every recording in ``results`` (those longer
    than a window); ``labelled``: {path: [(start_s, end_s, class)]}."""
    from pipeline import plots
    if not results:
        print(f"note: no recording longer than {events.window_s:g} s, so no timeline was drawn")
        return
    for result, png in zip(results, timeline_paths(out_png, [r["path"] for r in results])):
        centres, smoothed = result["_timeline"]
        plots.timeline(result["path"], centres, smoothed, classifier.labels,
                       events=result["events"], thresholds=events.thresholds,
                       background=events.background,
                       labelled=(labelled or {}).get(result["path"], ()),
                       sample_rate=classifier.config.sample_rate, out_png=png)
        print(f"saved {png}")


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
    files.write_csv(path, [header, *rows])


def evaluate(classifier, folder, events, *, report_dir, json_path):
    """Accuracy, macro-F1 and confusion matrix on a labelled folder."""
    from pipeline import evaluation, plots
    found, warnings = clips.clips_from_folder(folder)
    for warning in warnings:
        print(f"warning: {warning}")
    unknown = sorted({c.label for c in found} - set(classifier.labels))
    if unknown:
        raise PipelineError(f"{folder}: folders {unknown} are not classes of the model "
                            f"({classifier.labels}); rename or remove them")
    y_true, y_pred, failed = [], [], []
    for clip in found:
        result = inference.classify_file(classifier, clip.path, events)
        if result["error"]:
            print(f"{clip.path}: error: {result['error']}")
            failed.append({"path": clip.path, "error": result["error"]})
            continue
        y_true.append(classifier.labels.index(clip.label))
        y_pred.append(classifier.labels.index(result["class"]))
    if not y_true:
        raise PipelineError(f"{folder}: no clip could be classified")
    metrics = evaluation.classification_metrics(y_true, y_pred, classifier.labels)
    metrics.update(clips_scored=len(y_true), clips_failed=len(failed), failed=failed)
    print(evaluation.report_text(metrics, f"evaluation on {folder} ({len(y_true)} clips)"),
          end="")
    if failed:
        print(f"{len(failed)} of {len(found)} clips could not be scored (listed above)")
    out_png = Path(report_dir) / "confusion_evaluate.png"
    plots.confusion_matrices([(f"{classifier.path.name} on {Path(folder).name}",
                               metrics["confusion_matrix"])], classifier.labels, out_png)
    print(f"saved {out_png}")
    if json_path:
        files.write_json(json_path, metrics)
    return 1 if failed else 0


def evaluate_events(classifier, folder, events, *, tolerance_s, json_path, timeline=None):
    """Event-based precision, recall, F1 and false activations per hour on
    recordings labelled in Audacity (rec.wav + rec.txt). Labels of
    background classes are not events and are ignored."""
    from pipeline.event_metrics import event_scores, match_events, standard_event_scores
    from pipeline.labels import labelled_recordings, merge_overlapping, within_recording
    recordings = labelled_recordings(folder, classifier.labels)
    reference, detected, seconds, drawn = [], [], 0.0, []
    for index, (path, labelled) in enumerate(recordings):
        result = inference.classify_file(classifier, path, events)
        if result.get("_silent"):  # a silent recording: no detections
            result = {"duration_s": features.audio_duration(path), "events": []}
        elif result["error"]:
            raise PipelineError(f"{path}: {result['error']}")
        seconds += result["duration_s"]
        labelled = merge_overlapping(within_recording(labelled, result["duration_s"], path))
        reference += [(e.start_s, e.end_s, (index, e.label)) for e in labelled
                      if e.label not in events.background]
        if timeline and "_timeline" in result:
            drawn.append((result, [(e.start_s, e.end_s, e.label) for e in labelled
                                   if e.label not in events.background]))
        detected += [(e["start_s"], e["end_s"], (index, e["class"]))
                     for e in result.get("events", [])]
    per_recording = match_events(reference, detected, tolerance_s)
    counts = {}
    for (_, label), c in per_recording.items():  # sum each class over the recordings
        total = counts.setdefault(label, dict.fromkeys(c, 0))
        for key, value in c.items():
            total[key] += value
    scores = event_scores(counts, seconds / 3600)
    event_classes = [x for x in classifier.labels if x not in events.background]
    standard = standard_event_scores(reference, detected, event_classes)
    print(f"event evaluation on {folder}: {len(recordings)} recordings, "
          f"{seconds / 3600:.2f} h")
    print(f"detector view: a detection overlapping a label widened by {tolerance_s:g} s on "
          "both sides is right")
    print(f"{'class':<12}{'labelled':>9}{'found':>7}{'precision':>11}{'recall':>8}{'F1':>7}"
          f"{'false/h':>9}")
    for label, c in [*scores["per_class"].items(), ("overall", scores["overall"])]:
        print(f"{label:<12}{c['true_positives'] + c['false_negatives']:>9}"
              f"{c['true_positives']:>7}{c['precision']:>11.3f}{c['recall']:>8.3f}"
              f"{c['f1']:>7.3f}{c['false_activations_per_hour']:>9.1f}")
    print(f"standard view (sed_eval event-based, as published SED results): onset within "
          f"{standard['collar_s']:g} s, offset within {standard['collar_s']:g} s or "
          f"{standard['offset_fraction']:.0%} of the label's length")
    for label, c in [*standard["per_class"].items(), ("overall", standard["overall"])]:
        print(f"{label:<12}{'':>16}{c['precision']:>11.3f}{c['recall']:>8.3f}{c['f1']:>7.3f}")
    if timeline:
        draw_timelines(classifier, [r for r, _ in drawn], events, timeline,
                       labelled={r["path"]: spans for r, spans in drawn})
    if json_path:
        files.write_json(json_path, {**scores, "onset_tolerance_s": tolerance_s,
                                     "standard": standard,
                                     "recordings": [str(p) for p, _ in recordings]})
    return 0


def fired_windows(path, result, config, events):
    """(start sample, samples, event) of every window of a long recording
    that lies in one of ``result``'s events: the windows whose centres fall
    inside the event, which are exactly the run that formed it."""
    spans = result.get("events", [])
    if not spans:
        return
    sample_rate = config.sample_rate
    window, hop = int(events.window_s * sample_rate), int(events.hop_s * sample_rate)
    for start, samples in stream_windows(features.stream_audio(path, sample_rate), window, hop,
                                         config.window_alignment):
        centre = (start + len(samples) / 2) / sample_rate
        event = next((e for e in spans if e["start_s"] <= round(centre, 3) <= e["end_s"]), None)
        if event is not None:
            yield start, samples, event


def mined_rows(table):
    """{clip name: row} of an existing mined.csv (empty when there is none)."""
    import csv
    if not table.exists():
        return {}
    files.check_regular(table, "mined.csv")
    try:
        with open(table, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))[1:]
    except (UnicodeDecodeError, csv.Error) as err:
        raise PipelineError(f"{table}: not a mined.csv this script wrote ({err}). Move it "
                            "away, or choose another --into") from None
    # A row is written before its clip: a run killed between the two left a
    # row without a clip, dropped here.
    return {row[0]: row for row in rows if row and (table.parent / row[0]).is_file()}


def mine(classifier, folder, events, into):
    """Hard negatives: every window that fires an event in recordings known
    to hold none is saved as a WAV clip in ``into`` (e.g. data/clips/other/),
    with a row in ``into``/mined.csv saying where it came from. The next
    training run learns from them.

    Idempotent: a clip's name follows from its recording and start, so
    mining the same recordings again replaces the same clips and rows.
    mined.csv is rewritten even when a run fails half-way, so it always
    lists every clip on disk."""
    import hashlib

    import soundfile
    from pipeline.plots import file_name_part
    from pipeline.labels import recordings_in
    recordings = recordings_in(folder)
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    table = into / "mined.csv"
    files.remove_stale_temporaries_in(into)  # of a run that was killed
    rows = mined_rows(table)
    header = ["clip", "recording", "start_s", "end_s", "event_class", "event_peak"]
    rate, saved = classifier.config.sample_rate, 0
    try:
        for path in recordings:
            result = inference.classify_file(classifier, path, events)
            if result["error"]:
                print(f"{path}: skipped: {result['error']}")
                continue
            tag = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:6]
            for start, samples, event in fired_windows(path, result, classifier.config, events):
                name = (f"mined_{file_name_part(Path(path).stem)[:80]}_{tag}_"
                        f"{start * 1000 // rate:09d}ms.wav")
                rows[name] = [name, str(path), f"{start / rate:.3f}",
                              f"{(start + len(samples)) / rate:.3f}", event["class"],
                              f"{event['peak_probability']:.3f}"]
                # The row first, then the clip: even a SIGKILL between the
                # two leaves no clip that mined.csv does not list.
                files.write_csv(table, [header, *rows.values()])
                with files.atomic_path(into / name) as tmp:
                    soundfile.write(tmp, samples, rate, subtype="PCM_16", format="WAV")
                saved += 1
            print(f"{path}: {len(result.get('events', []))} false activation(s)")
    finally:
        rows = {k: r for k, r in rows.items() if (into / k).is_file()}
        files.write_csv(table, [header, *rows.values()])
    print(f"saved {saved} window(s) that fired to {into}/ (listed in {table}); retrain "
          "with them: python make_dataset_16k.py && python train_16k.py && "
          "python model_conv.py")
    return 0


def listen(classifier, events, *, source, speed, save_dir, context_s):
    """Live classification of the microphone ("mic") or of a recording at
    ``speed`` times real time: one line per hop with each class's
    probability and threshold, each event as it starts and ends, and a
    summary (minutes, events per class, onset-to-report latency) at the end
    or on Ctrl-C."""
    from pipeline import live
    rate = classifier.config.sample_rate
    if source == "mic":
        blocks = live.microphone_blocks(rate)
    else:
        try:  # a clear error for a missing, unreadable or special file, or a typo for mic
            if not Path(source).is_file():
                raise features.FeatureError("no such recording (--listen takes mic, or an "
                                            "audio file)" if not Path(source).exists() else
                                            "not a regular file; give mic or an audio file",
                                            source)
            features.audio_duration(source)
        except features.FeatureError as err:
            raise PipelineError(f"--listen={source}: {err.reason}") from None
        blocks = live.file_blocks(source, rate, speed=speed)
    listener = live.Listener(classifier, events, save_dir=save_dir, context_s=context_s)
    tty = sys.stdout.isatty()

    def on_window(now_s, probs):
        bars = "  ".join(f"{label} {'#' * int(10 * p):<10} {p:.2f}"
                         + (f"/{events.thresholds[label]:.2f}" if label not in events.background
                            else "") for label, p in zip(classifier.labels, probs))
        start, end = ("\r", "") if tty else ("", "\n")  # a terminal: one line, updated
        print(f"{start}{now_s:8.1f} s  {bars}", end=end, flush=True)

    def on_event(kind, event):
        verb = "starts" if kind == "start" else "ended "
        span = (f"at {event['start_s']:.3f} s" if kind == "start"  # as precise as --json
                else f"{event['start_s']:.3f}-{event['end_s']:.3f} s")
        print(f"{chr(10) if tty else ''}event {event['class']} {verb} {span} "
              f"(peak {event['peak_probability']:.2f})", flush=True)

    print(f"listening to {'the microphone' if source == 'mic' else source} "
          f"({events.window_s:g} s windows every {events.hop_s:g} s); Ctrl-C ends", flush=True)
    found = listener.run(blocks, on_window=on_window, on_event=on_event)
    minutes = listener.total / rate / 60
    counts = {k: v for k, v in listener.counts.items() if k not in events.background}
    delays = listener.latency
    latency = (f"; onset to first report: mean {delays['sum'] / delays['count']:.2f} s, "
               f"max {delays['max']:.2f} s" if delays["count"] else "")
    print(f"\nlistened {minutes:.2f} min; events: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()) + latency
          + (f"; event audio in {save_dir}/" if save_dir and found else ""))
    if listener.error is not None:
        print(f"error: --listen={source}: stopped early: {listener.error}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = settings.parser_from_constants(globals())
    parser.add_argument("paths", nargs="*", help="audio files or folders (searched recursively)")
    cfg = settings.parse_settings(globals(), argv, parser)
    modes = [f"--{name}" for name in ("evaluate", "mine", "listen", "evaluate_events")
             if getattr(cfg, name)] + (["audio paths"] if cfg.paths else [])
    if len(modes) > 1:  # one would silently win over the others
        raise PipelineError(f"{' and '.join(modes)}: give one of them per run")
    settings.check_settings(cfg, onset_tolerance_s=settings.between(0, 3600))
    classifier = Classifier(model_path(cfg.model, cfg.model_dir))
    events = event_settings(classifier.meta, window_s=cfg.window_s, hop_s=cfg.hop_s,
                            smooth_windows=cfg.smooth_windows, threshold=cfg.threshold,
                            thresholds=cfg.thresholds, min_event_s=cfg.min_event_s,
                            background=cfg.background_classes, source=classifier.path)
    outputs = {"--csv": cfg.csv, "--json": cfg.json, "--timeline": cfg.timeline}
    for option, path in outputs.items():
        if path:
            files.check_writable(option, Path(path).parent)
    if cfg.evaluate:
        files.check_writable("--report_dir", cfg.report_dir)
        return evaluate(classifier, cfg.evaluate, events, report_dir=cfg.report_dir,
                        json_path=cfg.json)
    for mode in ("mine", "listen", "evaluate_events"):
        if getattr(cfg, mode):
            inference.check_listens(classifier, f"--{mode}")
    if cfg.mine:
        files.check_writable("--into", cfg.into)
        return mine(classifier, cfg.mine, events, cfg.into)
    if cfg.listen:
        settings.check_settings(cfg, speed=(lambda v: v == 0 or 0.01 <= v <= 10000,
                                            "0 (as fast as possible) or in [0.01, 10000]"),
                                event_context_s=settings.between(0, 60))
        if cfg.save_events:
            files.check_writable("--save_events", cfg.save_events)
        return listen(classifier, events, source=cfg.listen, speed=cfg.speed,
                      save_dir=cfg.save_events, context_s=cfg.event_context_s)
    if cfg.evaluate_events:
        return evaluate_events(classifier, cfg.evaluate_events, events,
                               tolerance_s=cfg.onset_tolerance_s, json_path=cfg.json,
                               timeline=cfg.timeline)
    if not cfg.paths:
        raise PipelineError("no input: give audio files or folders, --evaluate=DIR or "
                            "--evaluate_events=DIR")

    paths = clips.expand_paths(cfg.paths)
    if not paths:
        raise PipelineError(f"no audio files in {', '.join(cfg.paths)} "
                            f"(looked for {', '.join(clips.AUDIO_EXTENSIONS)})")
    results = []
    for path in paths:
        result = inference.classify_file(classifier, path, events)
        print_result(result, cfg.all)
        sys.stdout.flush()
        results.append(result)
    if cfg.timeline:
        draw_timelines(classifier, [r for r in results if "_timeline" in r], events,
                       cfg.timeline)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    if cfg.csv:
        write_csv(cfg.csv, public, classifier.labels)
    if cfg.json:
        files.write_json(cfg.json, {"model": str(classifier.path), "labels": classifier.labels,
                                    "results": public})
    failed = sum(1 for r in results if r["error"])
    if failed:
        print(f"{failed} of {len(results)} files failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run_script(main)
