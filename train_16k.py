"""Stage 2: train the classifier on the dataset from make_dataset_16k.py.

    python train_16k.py                      # data/dataset_16k.npz -> models/
    python train_16k.py --folds=5            # grouped 5-fold CV first, then the final model
    python train_16k.py --folds=source       # leave one source out (manifest column "source")

Splits are stratified by class and grouped by source recording, so clips of
one recording never sit on both sides. The held-out test split is saved in
models/model_16k.json for model_conv.py and later evaluations.
"""

import json
import time
from pathlib import Path

import numpy as np

from pipeline import artifacts, evaluation, files, settings
from pipeline.clip_decisions import evaluate_rows, fit_open_set
from pipeline.errors import PipelineError, run_script
from pipeline.event_settings import EVENT_KEYS, check_device_smoothing, default_events
from pipeline.networks import architecture, layer_units
from pipeline.quiet import configure_tensorflow
from pipeline.splits import folds_text, train_val_test_split
from pipeline.training import (SEED_RECIPE_USES, augmentation_pool, check_finite_weights,
                               check_split_has_every_class, check_trainable, clip_windows,
                               cross_validate, fit, fold_plan, recipe_split)

# --- What to train, and where ---
DATASET = "data/dataset_16k.npz"  # dataset written by make_dataset_16k.py
MODEL_DIR = "models"           # where the model and its metadata go
REPORT_DIR = "reports"         # where figures and reports go
RECIPE = "default"             # "default"; "seed": the seed's method end to end (seed features,
                               # its MLP, whole clips, fixed EPOCHS; README "The seed method")
ARCHITECTURE = "auto"          # "mlp" (the seed's), "cnn" (2-D features), "auto": cnn if 2-D,
                               # "pretrained": TEACHER's backbone + a head (--features=efficientat)
HIDDEN_LAYERS = "256,256,128,128"  # units of each hidden Dense layer (the seed's MLP)
CNN_FILTERS = "16,32,32"       # filters of each 3x3 conv layer of the CNN
DROPOUT = 0.5                  # dropout after the last hidden layer
FOLDS = "0"                    # "5": grouped 5-fold CV first; "source": leave one source out; "0": none
SEED = 42                      # same dataset + seed -> same split, model and metrics
JOBS = -1                      # processes for augmentation and cross-validation folds (-1 = all cores)
REPLACE_MODEL = False          # allow replacing a model in MODEL_DIR trained on other labels
# --- How it trains ---
LEARNING_RATE = 0.001          # Adam learning rate (lowered on plateaus, see LR_PATIENCE)
EPOCHS = 100                   # upper bound; early stopping usually ends sooner (seed recipe: all)
BATCH_SIZE = 32                # clips per gradient step
PATIENCE = 8                   # epochs without a better validation loss before stopping
LR_PATIENCE = 3                # epochs without a better validation loss before the rate drops
LR_FACTOR = 0.3                # ... multiplied by this (LR_PATIENCE = 0: a fixed rate)
TEST_FRACTION = 0.2            # share of groups held out for the final test
VAL_FRACTION = 0.2             # share of the remaining groups used for early stopping
CLASS_WEIGHTS = True           # weight classes by inverse frequency in the training split
CLASS_WEIGHT_POWER = 1.0       # ... raised to this power (0.5: milder, between balanced and none)
AUGMENT = True                 # add augmented copies of training clips (re-reads their audio once)
AUGMENT_COPIES = 1             # augmented copies of each training clip in every epoch
AUGMENT_POOL = 4               # copies made (and cached) per clip, which epochs draw from
REDRAW_COPIES = True           # each epoch draws fresh copies (False: the same ones every epoch)
EVERY_PATCH = True             # train on every window (WINDOW_S every HOP_S) of each clip, one drawn
                               # per epoch, and decide test clips by their windows' mean as predict.py
                               # does (off: each clip's loudest patch only)
OPEN_SET_CLASS = None          # unsure event predictions fall back to this class, e.g. "other"
OPEN_SET_KEEP = 0.95           # share of right validation event predictions the rule must keep
# --- Knowledge from a pretrained tagger (README "Best model on real recordings") ---
TEACHER = None                 # pretrained tagger folder (.tflite + class list), for --architecture=pretrained
HEAD_INPUT = "logits"          # pretrained: the backbone output the head reads ("logits", "embedding")
HEAD_C = 0.003                 # pretrained: inverse L2 strength of the logistic-regression head
FINE_TUNE_EPOCHS = 0           # pretrained: then train backbone and head together this many epochs
FINE_TUNE_RATE = 1e-5          # pretrained: Adam learning rate of that fine-tuning
DISTIL_FROM = None             # distillation: a pretrained tagger folder whose probabilities
                               # (a head fitted on the training clips) the model also learns
UNLABELLED = None              # with DISTIL_FROM: folder or manifest of unlabelled audio the
                               # teacher labels for the model (clips of held-out groups skipped)
DISTIL_WEIGHT = 0.5            # share of the targets that are the teacher's probabilities
DISTIL_TEMPERATURE = 2.0       # softening of the teacher's probabilities
DISTIL_COPIES = "clip"         # an augmented copy's soft target: "clip" (the teacher's on its
                               # clip) or "teacher" (the teacher run on the copy's own audio, cached)
# --- Research options (measured in docs/results.md and the README; none beat the default) ---
IR_DIR = None                  # folder of microphone impulse responses (WAV) to convolve copies with
IR_PROBABILITY = 0.7           # share of copies heard through a random microphone of IR_DIR
ROOM_PROBABILITY = 0.0         # share of copies in a synthetic reverberant room
MIX_CLASSES = None             # only clips of these classes (e.g. "other") are mixed in as
                               # background of copies; None: clips of any class
NOISE_NEGATIVES = 0.0          # synthetic steady noises trained on as the first BACKGROUND_CLASSES
                               # class, this share of the training clips (0: none)
SPEC_AUGMENT = False           # copies of log-mel patches also get random band EQ and masks
FREQ_MIXSTYLE = 0.0            # share of copies whose per-band mean and spread mix with another clip's
MIXSTYLE_ALPHA = 0.3           # Freq-MixStyle: Beta(alpha, alpha) mixing weight
MIXUP = 0.0                    # mixup: Beta(alpha, alpha) of copies with other training rows; 0 = off
LABEL_SMOOTHING = 0.0          # share of each training target spread evenly over the classes
BATCH_NORM = False             # CNN: batch normalisation after each convolution
SEPARABLE = False              # CNN: depthwise-separable convolutions after the first (cheaper
                               # per filter, so a wider network fits the same budget)
BAND_NORM = 0.0                # CNN: share of each band's mean over the patch subtracted first
                               # (1: all of it, so a fixed microphone or room colouring, a
                               # constant per band, is gone; 0.5: relaxed, half the shape kept)
TEACHER_FILTERS = None         # distillation: filters of a wider CNN teacher, e.g. "32,64,64"
# --- Long recordings: windows and events (stored with the model) ---
# predict.py, calibrate.py and the device header use them; calibrate.py may replace the last four.
WINDOW_S = 2.0                 # window length for long recordings, in seconds
HOP_S = 1.0                    # step between windows, in seconds
SMOOTH_WINDOWS = 3             # moving average over this many windows
THRESHOLD = 0.5                # smoothed probability that starts an event
MIN_EVENT_S = 1.0              # shorter events are dropped
BACKGROUND_CLASSES = "other"   # classes that never form events (comma-separated)


# ----------------------------------------------------------------------------
# What the stage checks, and what it writes.

def check_existing_labels(model_dir, label_names, replace):
    """Refuse to overwrite a model trained on other labels unless asked to."""
    meta_path = artifacts.model_paths(model_dir)["meta"]
    if replace or not meta_path.is_file():
        return
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8")).get("labels")
    except ValueError:
        return
    if old and old != label_names:
        raise PipelineError(
            f"{meta_path}: the model there was trained on labels {old}, this dataset has "
            f"{label_names}. Use another --model_dir, or --replace_model=true to replace it")


def check_recipe(cfg):
    """--recipe=seed runs the seed's method: a setting outside it (e.g.
    --augment) changed from its default is refused, not silently ignored."""
    if cfg.recipe == "seed":
        defaults = vars(settings.parse_settings(globals(), []))
        changed = [k for k, v in vars(cfg).items()
                   if k not in SEED_RECIPE_USES and k in defaults and v != defaults[k]]
        if changed:
            raise PipelineError(f"--recipe=seed runs the seed's method, which has no "
                                f"{', '.join('--' + k for k in changed)}: drop them, or use "
                                "--recipe=default")


def check_settings(cfg):
    """Every numeric setting in range, before the dataset is read."""
    settings.check_settings(
        cfg, epochs=settings.between(1, 100000), batch_size=settings.between(1, 65536),
        patience=settings.between(0, 100000), lr_patience=settings.between(0, 100000),
        lr_factor=settings.between(0, 1, True, True), augment_pool=settings.between(1, 64),
        augment_copies=settings.between(0, cfg.augment_pool),
        ir_probability=settings.between(0, 1), room_probability=settings.between(0, 1),
        freq_mixstyle=settings.between(0, 1), band_norm=settings.between(0, 1),
        mixstyle_alpha=settings.between(0, 100, True),
        mixup=settings.between(0, 100), distil_weight=settings.between(0, 1),
        noise_negatives=settings.between(0, 10), class_weight_power=settings.between(0, 4),
        label_smoothing=settings.between(0, 1, high_open=True),
        distil_temperature=settings.between(0, 100, True),
        test_fraction=settings.between(0, 1, True, True),
        val_fraction=settings.between(0, 1, True, True),
        dropout=settings.between(0, 1, high_open=True),
        learning_rate=(lambda v: 0 < v < float("inf"), "a positive finite number"),
        open_set_keep=settings.between(0, 1, low_open=True),
        fine_tune_epochs=settings.between(0, 100000), head_c=settings.between(0, 1e9, True),
        fine_tune_rate=(lambda v: 0 < v < float("inf"), "a positive finite number"),
        jobs=settings.JOBS_RULE)
    if cfg.teacher_filters:
        layer_units(cfg.teacher_filters, "teacher_filters")
    if cfg.teacher_filters and cfg.distil_from:
        raise PipelineError("--teacher_filters and --distil_from each set the distillation "
                            "teacher: give one")
    if cfg.distil_copies not in ("clip", "teacher"):
        raise PipelineError(f"--distil_copies={cfg.distil_copies!r}: expected 'clip' (the "
                            "teacher's probabilities of the copy's clip) or 'teacher' (the "
                            "teacher's of the copy's own audio)")
    if cfg.distil_copies == "teacher" and not cfg.distil_from:
        raise PipelineError("--distil_copies=teacher needs --distil_from=FOLDER: a teacher "
                            "labels the copies")
    if cfg.unlabelled and not cfg.distil_from:
        raise PipelineError("--unlabelled needs --distil_from=FOLDER: a teacher labels that "
                            "audio")
    if cfg.ir_dir and not Path(cfg.ir_dir).is_dir():
        raise PipelineError(f"--ir_dir={cfg.ir_dir}: no such folder of impulse responses")
    fold_plan(cfg.folds)
    check_recipe(cfg)


def load_checked_dataset(cfg):
    """The dataset, refused when features.py has changed since it was built,
    when it cannot be split, or when it would replace a model of other labels."""
    data = artifacts.load_dataset(cfg.dataset)
    artifacts.check_current(data["feature_config"], cfg.dataset,
                            "Rebuild it with `python make_dataset_16k.py`.")
    architecture(cfg, data["feature_config"])  # bad layer settings fail before any work
    plan = fold_plan(cfg.folds)
    check_trainable(data["labels"], data["groups"], data["label_names"],
                    min_groups=max(3, plan if isinstance(plan, int) else 0), source=cfg.dataset)
    if plan == "source" and len(set(data["sources"])) < 2:
        raise PipelineError(f"{cfg.dataset}: --folds=source needs clips from at least two "
                            "sources; give the manifest a 'source' column and rebuild the "
                            "dataset")
    check_existing_labels(cfg.model_dir, data["label_names"], cfg.replace_model)
    return data


def save_model(model_dir, model, data, *, scaling, rule, split, metrics, cv, history, events,
               cfg):
    """The Keras model, labels.txt and the metadata every later stage reads."""
    paths = artifacts.model_paths(model_dir)
    with files.atomic_path(paths["keras"]) as tmp:
        model.save(tmp)
    files.write_text(paths["labels"], "\n".join(data["label_names"]) + "\n")
    settings_used = {k: v for k, v in vars(cfg).items()
                     if k not in ("dataset", "model_dir", "report_dir", "jobs", *EVENT_KEYS,
                                  "background_classes")
                     and not k.startswith("_")}
    meta = {
        "labels": data["label_names"],
        "feature_config": data["feature_config"].to_dict(),
        "input_standardisation": scaling,
        "open_set": rule,
        "events": events,
        "model_type": architecture(cfg, data["feature_config"])[0],
        # the seed's method decides a file by its whole-clip features, any length
        "decides_clips_by": "whole_clip" if cfg.recipe == "seed" else "windows",
        "teacher": teacher_record(cfg),
        "n_inputs": int(data["features"].shape[1]),
        "settings": settings_used,
        "dataset": {"path": str(cfg.dataset), "sha256": data["sha256"],
                    "clips": int(len(data["features"])),
                    "per_class": {name: int(np.sum(data["labels"] == k))
                                  for k, name in enumerate(data["label_names"])},
                    "groups": len(set(data["groups"])),
                    "sources": {s: int(n) for s, n in zip(*np.unique(
                        np.asarray(data["sources"]), return_counts=True)) if s}},
        "split": {name: [data["paths"][i] for i in idx] for name, idx in split.items()},
        "epochs_run": len(history["loss"]),
        "metrics": {"test": metrics, "cross_validation": cv},
        "keras_sha256": files.file_sha256(paths["keras"]),
    }
    # The card describes this model from now on (the previous model's card,
    # figures and all, would be wrong); model_conv.py adds the int8 figures.
    from pipeline.model_card import card_path, model_card
    files.write_text(card_path(model_dir), model_card(meta))
    files.write_json(paths["meta"], meta)
    return paths, meta


def teacher_record(cfg):
    """The backbone a pretrained-tier model was built from (None otherwise)."""
    if cfg.architecture != "pretrained":
        return None
    from pipeline import pretrained, teacher
    return pretrained.teacher_digest(teacher.Teacher(cfg.teacher))


def save_reports(report_dir, metrics, *, history, label_names, cv):
    """Confusion matrix, training curves and the classification report; the
    per-fold or per-source table when cross-validation ran."""
    from pipeline import plots
    report_dir = Path(report_dir)
    plots.confusion_matrices([("test split", metrics["confusion_matrix"])], label_names,
                             report_dir / "confusion_matrix.png")
    plots.training_curves(history, report_dir / "training_curves.png")
    files.write_text(report_dir / "classification_report.txt",
                     evaluation.report_text(metrics, "test split"))
    files.write_json(report_dir / "classification_report.json", metrics)
    if cv:
        files.write_text(report_dir / "cross_validation.txt", folds_text(cv))
        files.write_json(report_dir / "cross_validation.json", cv)


def main(argv=None):
    cfg = settings.parse_settings(globals(), argv)
    started = time.perf_counter()
    check_settings(cfg)
    events = default_events(window_s=cfg.window_s, hop_s=cfg.hop_s,
                            smooth_windows=cfg.smooth_windows, threshold=cfg.threshold,
                            min_event_s=cfg.min_event_s, background=cfg.background_classes)
    data = load_checked_dataset(cfg)
    check_device_smoothing([cfg.smooth_windows], data["feature_config"],
                           f"--smooth_windows={cfg.smooth_windows}")
    files.check_writable("--model_dir", cfg.model_dir)  # before training, not after
    files.check_writable("--report_dir", cfg.report_dir)
    labels, groups, label_names = data["labels"], data["groups"], data["label_names"]
    configure_tensorflow()  # deterministic ops: same seed -> same metrics

    plan = fold_plan(cfg.folds)
    pool = augmentation_pool(data, cfg)  # every fold uses the same cached copies
    windows = clip_windows(data, cfg)
    cv = cross_validate(data, cfg, plan, pool, windows=windows) if plan else None

    train, val, test = train_val_test_split(labels, groups, test_fraction=cfg.test_fraction,
                                            val_fraction=cfg.val_fraction, seed=cfg.seed)
    train, val = recipe_split(cfg, train, val)
    split = {"train": train, "validation": val, "test": test}
    check_split_has_every_class(split, labels, label_names)
    model, history, scaling = fit(data, train, val, cfg, pool=pool, windows=windows)
    check_finite_weights(model, cfg.learning_rate)
    rule = fit_open_set(model, data, val, scaling=scaling, cfg=cfg, windows=windows)
    metrics = evaluate_rows(model, data, test, scaling=scaling, rule=rule,
                            windows=windows)
    paths, meta = save_model(cfg.model_dir, model, data, scaling=scaling, rule=rule,
                             split=split, metrics=metrics, cv=cv, history=history,
                             events=events, cfg=cfg)
    save_reports(cfg.report_dir, metrics, history=history, label_names=label_names, cv=cv)

    print(f"\nclips: {len(train)} train, {len(val)} validation, {len(test)} test "
          f"({len(set(groups))} groups)")
    print(f"epochs run: {meta['epochs_run']} " + ("(all of --epochs: the seed's method)"
                                                  if cfg.recipe == "seed" else
                                                  "(best weights kept)"))
    if rule and rule["background"]:
        print(f"open set: temperature {rule['temperature']:.2f}; an event class needs a "
              f"calibrated probability of {rule['min_probability']:.2f}, else "
              f"'{rule['background']}'")
    print(evaluation.report_text(metrics, "test split"), end="")
    print(f"saved {paths['keras']}, {paths['meta']}; reports in {cfg.report_dir}/")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_script(main)
