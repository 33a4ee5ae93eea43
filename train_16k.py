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

from pipeline import artifacts, evaluation, files, open_set, settings
from pipeline.splits import (evaluation_splits, folds_text, held_out_predictions,
                             summarise_splits, train_val_test_split)
from pipeline.errors import PipelineError, run_script
from pipeline.distillation import distilled_targets
from pipeline.inference import EVENT_KEYS, check_device_smoothing, default_events
from pipeline.quiet import configure_tensorflow, import_keras
from pipeline.standardisation import fit_standardisation, standardise

DATASET = "data/dataset_16k.npz"  # dataset written by make_dataset_16k.py
MODEL_DIR = "models"           # where the model and its metadata go
REPORT_DIR = "reports"         # where figures and reports go
MODEL = "auto"                 # "mlp" (the seed's), "cnn" (2-D features), "auto": cnn if 2-D,
                               # "pretrained": TEACHER's backbone + a head (--features=efficientat)
TEACHER = None                 # pretrained tagger folder (.tflite + class list), for --model=pretrained
HEAD_INPUT = "logits"          # pretrained: the backbone output the head reads ("logits", "embedding")
HEAD_C = 0.003                 # pretrained: inverse L2 strength of the logistic-regression head
FINE_TUNE_EPOCHS = 0           # pretrained: then train backbone and head together this many epochs
FINE_TUNE_RATE = 1e-5          # pretrained: Adam learning rate of that fine-tuning
HIDDEN_LAYERS = "256,256,128,128"  # units of each hidden Dense layer (the seed's MLP)
CNN_FILTERS = "16,32,32"       # filters of each 3x3 conv layer of the CNN
DROPOUT = 0.5                  # dropout after the last hidden layer
LEARNING_RATE = 0.001          # Adam learning rate (lowered on plateaus, see LR_PATIENCE)
EPOCHS = 100                   # upper bound; early stopping usually ends sooner
BATCH_SIZE = 32                # clips per gradient step
PATIENCE = 8                   # epochs without a better validation loss before stopping
LR_PATIENCE = 3                # epochs without a better validation loss before the rate drops
LR_FACTOR = 0.3                # ... multiplied by this (LR_PATIENCE = 0: a fixed rate)
TEST_FRACTION = 0.2            # share of groups held out for the final test
VAL_FRACTION = 0.2             # share of the remaining groups used for early stopping
FOLDS = "0"                    # "5": grouped 5-fold CV first; "source": leave one source out; "0": none
CLASS_WEIGHTS = True           # weight classes by inverse frequency in the training split
CLASS_WEIGHT_POWER = 1.0       # ... raised to this power (0.5: milder, between balanced and none)
LABEL_SMOOTHING = 0.0          # share of each training target spread evenly over the classes
AUGMENT = True                 # add augmented copies of training clips (re-reads their audio once)
AUGMENT_COPIES = 1             # augmented copies of each training clip in every epoch
AUGMENT_POOL = 4               # copies made (and cached) per clip, which epochs draw from
REDRAW_COPIES = True           # each epoch draws fresh copies (False: the same ones every epoch)
IR_DIR = None                  # folder of microphone impulse responses (WAV) to convolve copies with
IR_PROBABILITY = 0.7           # share of copies heard through a random microphone of IR_DIR
ROOM_PROBABILITY = 0.0         # share of copies in a synthetic reverberant room
MIX_CLASSES = None             # only clips of these classes (e.g. "other") are mixed in as
                               # background of copies; None: clips of any class
EVERY_PATCH = True             # train on every window (WINDOW_S every HOP_S) of each clip, one drawn
                               # per epoch, and decide test clips by their windows' mean as predict.py
                               # does (off: each clip's loudest patch only)
NOISE_NEGATIVES = 0.0          # synthetic steady noises trained on as the first BACKGROUND_CLASSES
                               # class, this share of the training clips (0: none)
SPEC_AUGMENT = False           # copies of log-mel patches also get random band EQ and masks
FREQ_MIXSTYLE = 0.0            # share of copies whose per-band mean and spread mix with another clip's
MIXSTYLE_ALPHA = 0.3           # Freq-MixStyle: Beta(alpha, alpha) mixing weight
MIXUP = 0.0                    # mixup: Beta(alpha, alpha) of copies with other training rows; 0 = off
BATCH_NORM = False             # CNN: batch normalisation after each convolution
SEPARABLE = False              # CNN: depthwise-separable convolutions after the first (cheaper
                               # per filter, so a wider network fits the same budget)
BAND_NORM = 0.0                # CNN: share of each band's mean over the patch subtracted first
                               # (1: all of it, so a fixed microphone or room colouring, a
                               # constant per band, is gone; 0.5: relaxed, half the shape kept)
DISTIL_FROM = None             # distillation: a pretrained tagger folder whose probabilities
                               # (a head fitted on the training clips) the model also learns
UNLABELLED = None              # with DISTIL_FROM: folder or manifest of unlabelled audio the
                               # teacher labels for the model (clips of held-out groups skipped)
TEACHER_FILTERS = None         # distillation: filters of a wider CNN teacher, e.g. "32,64,64"
DISTIL_WEIGHT = 0.5            # share of the targets that are the teacher's probabilities
DISTIL_TEMPERATURE = 2.0       # softening of the teacher's probabilities
JOBS = -1                      # processes for augmentation and cross-validation folds (-1 = all cores)
OPEN_SET_CLASS = None          # unsure event predictions fall back to this class, e.g. "other"
OPEN_SET_KEEP = 0.95           # share of right validation event predictions the rule must keep
SEED = 42                      # same dataset + seed -> same split, model and metrics
REPLACE_MODEL = False          # allow replacing a model in MODEL_DIR trained on other labels
# How the model listens to long recordings: stored with it, used by predict.py,
# calibrate.py and the device header (calibrate.py may replace the last four).
WINDOW_S = 2.0                 # window length for long recordings, in seconds
HOP_S = 1.0                    # step between windows, in seconds
SMOOTH_WINDOWS = 3             # moving average over this many windows
THRESHOLD = 0.5                # smoothed probability that starts an event
MIN_EVENT_S = 1.0              # shorter events are dropped
BACKGROUND_CLASSES = "other"   # classes that never form events (comma-separated)


# ----------------------------------------------------------------------------
# Data checks and leakage-safe splits.

def check_trainable(labels, groups, label_names, *, min_groups, source):
    """Raise PipelineError unless every class has at least ``min_groups``
    distinct groups (source recordings) to spread over the splits."""
    if len(label_names) < 2:
        raise PipelineError(f"{source}: only one class ({label_names[0]!r}); a classifier "
                            "needs at least two sub-folders of clips")
    for index, name in enumerate(label_names):
        count = len({g for g, y in zip(groups, labels) if y == index})
        if count < min_groups:
            raise PipelineError(
                f"{source}: class {name!r} has {count} clip group(s) (source recordings); "
                f"at least {min_groups} are needed to give train, validation and test "
                "their own. Add clips from more recordings, or lower --folds")


def check_split_has_every_class(splits, labels, label_names):
    for split_name, indices in splits.items():
        missing = [label_names[c] for c in range(len(label_names))
                   if not np.any(labels[indices] == c)]
        if missing:
            raise PipelineError(
                f"the {split_name} split has no clip of {', '.join(missing)}: too few "
                "groups to stratify. Add clips from more recordings or change --seed")


def class_weights(train_labels, n_classes, *, power=1.0):
    """Balanced class weights from the training split only, raised to
    ``power`` (1: inverse frequency; 0: all equal)."""
    from sklearn.utils.class_weight import compute_class_weight
    present = np.unique(train_labels)
    weights = compute_class_weight("balanced", classes=present, y=train_labels) ** power
    result = {c: 1.0 for c in range(n_classes)}
    result.update({int(c): float(w) for c, w in zip(present, weights)})
    return result


# ----------------------------------------------------------------------------
# The model.

def architecture(cfg, config):
    """The model to build, from the settings: kind ("mlp" or "cnn") and the
    units (MLP) or filters (CNN) of each layer. Checked before any training."""
    kind = cfg.model if cfg.model != "auto" else ("cnn" if config.input_shape else "mlp")
    if kind not in ("mlp", "cnn", "pretrained"):
        raise PipelineError(f"--model={cfg.model!r}: expected 'mlp', 'cnn', 'pretrained' or "
                            "'auto'")
    if kind == "pretrained":
        from pipeline import pretrained
        pretrained.check_preset(config, cfg.dataset)
        if not cfg.teacher:
            raise PipelineError("--model=pretrained needs --teacher=FOLDER (a pretrained "
                                "tagger's .tflite file and class list; README: 'Best model on "
                                "real recordings')")
        return kind, []
    if kind == "cnn" and not config.input_shape:
        raise PipelineError("--model=cnn needs 2-D features: build the dataset with "
                            "`python make_dataset_16k.py --features=logmel_patch`")
    option, text = (("cnn_filters", cfg.cnn_filters) if kind == "cnn"
                    else ("hidden_layers", cfg.hidden_layers))
    return kind, layer_units(text, option)


def layer_units(text, option):
    """Units or filters of each layer from a setting such as "16,32,32"."""
    units = settings.parse_list(text, int, option)
    if not units or min(units) < 1:
        raise PipelineError(f"--{option}={text!r}: expected positive integers, e.g. 16,32,32")
    return units


def build_model(n_inputs, n_classes, kind, units, *, dropout, learning_rate, seed,
                input_shape=None, batch_norm=False, band_norm=0.0, separable=False,
                label_smoothing=0.0):
    """The seed's MLP, or a small CNN on log-mel patches.

    MLP: Dense+ReLU layers of ``units``, dropout after the last, softmax
    out. The seed put ReLU on the output layer; categorical cross-entropy
    needs class probabilities, so the output is softmax (ReLU outputs can be
    all zero, which makes the loss undefined and the prediction arbitrary).

    CNN: the flat input is reshaped to ``input_shape`` + (1,), then one 3x3
    conv (+ batch normalisation with ``batch_norm``, folded into the conv by
    the int8 converter) + ReLU + 2x2 max-pool block per entry of ``units``
    (its filters), global average pooling, dropout, softmax; every operation
    has an int8 kernel in TensorFlow Lite Micro. With ``band_norm`` > 0 the
    patch first loses that share of each band's mean over its frames
    (average pooling over time, scaled unless the share is 1, subtracted
    with broadcasting: int8 TFLM operations); 1 is cepstral mean
    normalisation as for speech, less than 1 the relaxed form of
    frequency-wise normalisation (RFN, Kim et al. 2021), which keeps part
    of the clip's spectral shape. With ``separable`` every
    conv after the first is depthwise-separable (a 3x3 depthwise conv, then
    a 1x1 conv to ``units`` filters: both TFLM int8 operations), about 8x
    fewer multiply-adds per filter. ``label_smoothing``
    trains on targets with that share spread evenly over the classes.
    """
    keras = import_keras()
    inputs = keras.Input(shape=(n_inputs,))
    layers = []
    x = inputs
    if kind == "cnn":
        x = keras.layers.Reshape((*input_shape, 1))(x)
        if band_norm:
            frames = input_shape[0]
            means = keras.layers.AveragePooling2D(pool_size=(frames, 1))(x)
            if band_norm != 1:
                means = keras.layers.Rescaling(band_norm)(means)
            x = keras.layers.Subtract()([x, means])  # broadcast over the frames
        for k, filters in enumerate(units):
            if separable and k > 0:
                layers.append(keras.layers.DepthwiseConv2D(3, padding="same"))
                conv = keras.layers.Conv2D(filters, 1, use_bias=not batch_norm,
                                           activation=None if batch_norm else "relu")
            else:
                conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                                           activation=None if batch_norm else "relu")
            layers.append(conv)
            if batch_norm:
                layers += [keras.layers.BatchNormalization(), keras.layers.ReLU()]
            layers.append(keras.layers.MaxPooling2D(2))
        layers.append(keras.layers.GlobalAveragePooling2D())
    else:
        layers += [keras.layers.Dense(u, activation="relu") for u in units]
    layers += [keras.layers.Dropout(dropout, seed=seed),
               keras.layers.Dense(n_classes, activation="softmax")]
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, x)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                  metrics=["accuracy"])
    return model


def augmentation_pool(data, cfg):
    """Every clip's AUGMENT_POOL augmented copies (cached beside the
    dataset), or None without augmentation. Made once per run and shared by
    every fold."""
    if not cfg.augment or cfg.augment_copies < 1:
        return None
    from pipeline import copies
    return copies.all_copies(data, pool=cfg.augment_pool, dataset=cfg.dataset,
                             spec=cfg.spec_augment, ir_dir=cfg.ir_dir,
                             ir_probability=cfg.ir_probability,
                             room_probability=cfg.room_probability,
                             mix_labels=mix_classes(cfg, data["label_names"]), jobs=cfg.jobs)


def mix_classes(cfg, label_names):
    """MIX_CLASSES as a list of class names (None: any class), checked."""
    if not cfg.mix_classes:
        return None
    names = settings.parse_list(cfg.mix_classes, str, "mix_classes")
    unknown = [n for n in names if n not in label_names]
    if unknown:
        raise PipelineError(f"--mix_classes: no class {', '.join(map(repr, unknown))} in the "
                            f"dataset (its classes: {', '.join(label_names)})")
    return names


def clip_windows(data, cfg):
    """Every clip's windows (:func:`pipeline.views.all_windows`, cached
    beside the dataset) with EVERY_PATCH, else None."""
    if not cfg.every_patch:
        return None
    from pipeline import views
    return views.all_windows(data, window_s=cfg.window_s, hop_s=cfg.hop_s, dataset=cfg.dataset,
                             jobs=cfg.jobs)


def background_class(cfg, data):
    """Index of the first BACKGROUND_CLASSES class (NOISE_NEGATIVES' label)."""
    names = settings.parse_list(cfg.background_classes, str, "background_classes")
    found = [n for n in names if n in data["label_names"]]
    if not found:
        raise PipelineError(f"--noise_negatives needs a background class (--background_classes="
                            f"{cfg.background_classes!r}) among the dataset's classes: "
                            f"{', '.join(data['label_names'])}")
    return data["label_names"].index(found[0])


def augmented_training_set(data, train, cfg, pool, *, windows=None):
    """The training clips' rows (with EVERY_PATCH, every window of them
    from ``windows``), then every usable copy of them from ``pool`` (only
    copies whose background partner is a training clip too), with
    Freq-MixStyle as asked. Each epoch trains on the clips (one window of
    each) plus AUGMENT_COPIES of each clip's copies (:mod:`pipeline.epochs`).

    Returns
    -------
    x : np.ndarray, shape (n, n_features)
    y : np.ndarray, shape (n, classes): one-hot
    copy_of : np.ndarray of int, shape (n_copies,): the position in
        ``train`` of the clip each copy is of
    view_of : np.ndarray of int, shape (n - n_copies,), or None: with
        EVERY_PATCH, the position in ``train`` of the clip each window is of
        (NOISE_NEGATIVES' noises are clips ``len(train)``, ... after them)
    """
    from pipeline import augment
    position = {int(clip): k for k, clip in enumerate(train)}
    x, labels, view_of = data["features"][train], data["labels"][train], None
    if cfg.every_patch:
        if windows is None:
            raise ValueError("EVERY_PATCH needs the clips' windows (clip_windows)")
        mine = np.isin(windows[1], train)
        x, labels = windows[0][mine], data["labels"][windows[1][mine]]
        view_of = np.array([position[int(clip)] for clip in windows[1][mine]], np.int64)
    if cfg.noise_negatives > 0:
        noises = augment.noise_rows(int(round(cfg.noise_negatives * len(train))),
                                    data["feature_config"], cfg.seed)
        x = np.concatenate([x, noises])
        labels = np.concatenate([labels, np.full(len(noises), background_class(cfg, data))])
        if view_of is not None:
            view_of = np.concatenate([view_of, len(train) + np.arange(len(noises))])
    copy_of = np.zeros(0, np.int64)
    if pool is not None:
        from pipeline.copies import training_copies
        extra, of = training_copies(*pool, train, copies=pool[0].shape[1], seed=cfg.seed)
        rng = np.random.default_rng(cfg.seed + 1)
        if cfg.freq_mixstyle > 0 and data["feature_config"].input_shape:
            extra = augment.freq_mixstyle(extra, data["feature_config"].input_shape, rng,
                                          probability=cfg.freq_mixstyle,
                                          alpha=cfg.mixstyle_alpha)
        x = np.concatenate([x, extra])
        labels = np.concatenate([labels, data["labels"][of]])
        copy_of = np.array([position[int(clip)] for clip in of], np.int64)
    y = np.eye(len(data["label_names"]), dtype=np.float32)[labels]
    return x.astype(np.float32), y, copy_of, view_of


def train_network(units, x_train, y_train, cfg, *, copy_of, n_clips, validation, kind,
                  input_shape, class_weight, progress_desc, view_of=None):
    """Build and train one network on the epochs of :mod:`pipeline.epochs`
    (early stopping on validation loss, best weights kept, learning rate
    lowered on plateaus). Returns the model and its Keras history."""
    import keras
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(x_train.shape[1], y_train.shape[1], kind, units, dropout=cfg.dropout,
                        learning_rate=cfg.learning_rate, seed=cfg.seed,
                        input_shape=input_shape, batch_norm=cfg.batch_norm,
                        band_norm=cfg.band_norm, separable=cfg.separable,
                        label_smoothing=cfg.label_smoothing)
    history = fit_epochs(model, x_train, y_train, cfg, epochs=cfg.epochs, mixup=cfg.mixup,
                         lower_rate=True, copy_of=copy_of, n_clips=n_clips, view_of=view_of,
                         validation=validation, class_weight=class_weight,
                         progress_desc=progress_desc)
    return model, history


def fit_epochs(model, x_train, y_train, cfg, *, epochs, mixup, lower_rate, copy_of, n_clips,
               view_of, validation, class_weight, progress_desc):
    """Train a compiled ``model`` for up to ``epochs`` on the epochs of
    :mod:`pipeline.epochs` (early stopping on validation loss, best weights
    kept; with ``lower_rate``, the learning rate lowered on plateaus).
    Returns the Keras history dict."""
    import keras
    from pipeline.epochs import keras_batches
    from pipeline.progress import keras_callback
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                               restore_best_weights=True)]
    if lower_rate and cfg.lr_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=cfg.lr_factor, patience=cfg.lr_patience))
    if progress_desc:  # none in bench/ workers, which report per fold
        callbacks.append(keras_callback(epochs, progress_desc))
    batches = keras_batches(x_train, y_train, copy_of, n_clips, copies=cfg.augment_copies,
                            batch_size=cfg.batch_size, epochs=epochs, seed=cfg.seed,
                            redraw=cfg.redraw_copies, mixup=mixup, view_of=view_of,
                            class_weight=class_weight)
    history = model.fit(**batches, validation_data=validation, epochs=epochs,
                        shuffle=False, verbose=0,  # epoch_plan shuffles
                        callbacks=callbacks)
    return history.history


def fit(data, train, val, cfg, *, pool=None, windows=None, progress_desc="training"):
    """Train a fresh model on the training split (with EVERY_PATCH, on its
    clips' ``windows``, :func:`clip_windows`), augmented (copies from
    ``pool``, :func:`augmentation_pool`, drawn afresh each epoch) and
    standardised, with early stopping on the validation split. With
    TEACHER_FILTERS a wider CNN is trained first on the same epochs, and the
    model learns from its softened probabilities too (distillation).

    Returns
    -------
    model, history dict, input standardisation (or None)
    """
    config = data["feature_config"]
    n_classes = len(data["label_names"])
    kind, units = architecture(cfg, config)
    x_train, y_train, copy_of, view_of = augmented_training_set(data, train, cfg, pool,
                                                                windows=windows)
    if cfg.distil_from:
        from pipeline import distillation
        x_train, y_train, view_of = distillation.training_targets(data, train, cfg, x_train,
                                                                  y=y_train, copy_of=copy_of,
                                                                  view_of=view_of)
    scaling = fit_standardisation(x_train, config)
    x_train = standardise(x_train, scaling)
    x_val = standardise(data["features"][val], scaling)
    y_val = np.eye(n_classes, dtype=np.float32)[data["labels"][val]]
    common = dict(kind=kind, input_shape=config.input_shape, copy_of=copy_of,
                  n_clips=len(x_train) - len(copy_of),  # clips (or views), noises, then copies
                  view_of=view_of,
                  validation=(x_val, y_val),
                  class_weight=class_weights(data["labels"][train], n_classes,
                                             power=cfg.class_weight_power)
                  if cfg.class_weights else None)
    if kind == "pretrained":
        return fit_pretrained(data, cfg, x_train, y_train, train=train, val=val,
                              progress_desc=progress_desc, common=common)
    if cfg.teacher_filters:
        teacher_units = layer_units(cfg.teacher_filters, "teacher_filters")
        teacher, _ = train_network(teacher_units, x_train, y_train, cfg,
                                   progress_desc=progress_desc and "teacher", **common)
        y_train = distilled_targets(y_train, predict_proba(teacher, x_train),
                                    weight=cfg.distil_weight,
                                    temperature=cfg.distil_temperature)
    model, history = train_network(units, x_train, y_train, cfg, progress_desc=progress_desc,
                                   **common)
    history = {k: [float(v) for v in vals] for k, vals in history.items()
               if k != "learning_rate"}
    return model, history, scaling


def fit_pretrained(data, cfg, x_train, y_train, *, train, val, progress_desc, common):
    """The pretrained tier: a softmax head fitted as a regularised logistic
    regression (HEAD_C) on the frozen backbone's HEAD_INPUT of every training
    row (computed by the teacher file once per row content, cached beside the
    dataset), then put on the Keras backbone (:mod:`pipeline.pretrained`).
    Returns as :func:`fit`; the model reads the features themselves."""
    from pipeline import pretrained, teacher
    tutor = teacher.Teacher(cfg.teacher)
    cache = teacher.PatchCache(tutor, pretrained.cache_path(cfg.dataset, tutor))
    train_out = pretrained.head_features(cache.outputs(x_train, progress_desc=progress_desc
                                                       and "backbone outputs"), cfg.head_input)
    val_out = pretrained.head_features(cache.outputs(data["features"][val]), cfg.head_input)
    cache.save()
    mean, std = pretrained.embedding_scaling(train_out)
    n_classes = len(data["label_names"])
    labels = y_train.argmax(axis=1)
    weights = (class_weights(data["labels"][train], n_classes, power=cfg.class_weight_power)
               if cfg.class_weights else None)
    kernel, bias = pretrained.fit_head((train_out - mean) / std, labels, n_classes,
                                       c=cfg.head_c, class_weight=weights)
    history = {}
    for name, out, truth in (("", train_out, labels), ("val_", val_out, data["labels"][val])):
        logits = ((out - mean) / std) @ kernel + bias
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        history[f"{name}loss"] = [float(-np.mean(np.log(probs[np.arange(len(truth)), truth]
                                                        + 1e-12)))]
        history[f"{name}accuracy"] = [float(np.mean(probs.argmax(axis=1) == truth))]
    model = pretrained.compose(tutor.model_path, data["feature_config"], kernel=kernel,
                               bias=bias, mean=mean, std=std, head_input=cfg.head_input,
                               freeze=not cfg.fine_tune_epochs)
    if cfg.fine_tune_epochs:
        history = fine_tune(model, x_train, y_train, cfg, common=common,
                            progress_desc=progress_desc)
    return model, history, None


def fine_tune(model, x_train, y_train, cfg, *, common, progress_desc):
    """FINE_TUNE_EPOCHS of training the whole pretrained model (backbone and
    head) at FINE_TUNE_RATE on the epochs of :mod:`pipeline.epochs`, early
    stopping on the validation loss with the best weights kept. Returns the
    Keras history."""
    import keras
    keras.utils.set_random_seed(cfg.seed)
    model.compile(optimizer=keras.optimizers.Adam(cfg.fine_tune_rate),
                  loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    history = fit_epochs(model, x_train, y_train, cfg, epochs=cfg.fine_tune_epochs, mixup=0.0,
                         lower_rate=False, copy_of=common["copy_of"],
                         n_clips=common["n_clips"], view_of=common["view_of"],
                         validation=common["validation"], class_weight=common["class_weight"],
                         progress_desc=progress_desc and "fine-tuning")
    return {k: [float(v) for v in vals] for k, vals in history.items() if k != "learning_rate"}


def predict_proba(model, x):
    """Class probabilities of rows of model inputs."""
    return model.predict(x, verbose=0, batch_size=256)


def fit_open_set(model, data, val, *, scaling, cfg, windows=None):
    """The open-set rule (temperature, minimum probability) from the
    validation split's predictions: of each clip's loudest patch, or with
    ``windows`` (:func:`clip_windows`) of its windows, as
    :func:`predict_rows` decides."""
    probs, clip_of = row_probabilities(lambda x: predict_proba(model, x), data, val,
                                       scaling=scaling, windows=windows)
    return open_set.fit_rule(probs, data["labels"][clip_of], data["label_names"],
                             background=cfg.open_set_class, keep=cfg.open_set_keep,
                             clip_of=None if windows is None else clip_of)


def row_probabilities(predict, data, rows, *, scaling, windows=None):
    """``predict``'s outputs (standardised inputs -> probabilities) for the
    loudest patch of each of dataset ``rows``, or with ``windows``
    (:func:`clip_windows`) for each of their windows.

    Returns
    -------
    probs : np.ndarray, shape (n, classes)
    clip_of : np.ndarray of int, shape (n,): the dataset row of each
    """
    if windows is None:
        x, clip_of = data["features"][rows], np.asarray(rows)
    else:
        mine = np.isin(windows[1], rows)
        x, clip_of = windows[0][mine], windows[1][mine]
    return predict(standardise(x, scaling)), clip_of


def clip_probabilities(predict, data, rows, *, scaling, windows=None, rule=None):
    """Class probabilities of dataset ``rows`` (:func:`row_probabilities`),
    calibrated by the open-set ``rule`` (if any): of each clip's loudest
    patch, or with ``windows`` the mean over its calibrated windows, as
    predict.py decides a clip longer than a window.

    Returns
    -------
    np.ndarray, shape (len(rows), classes)
    """
    probs, clip_of = row_probabilities(predict, data, rows, scaling=scaling, windows=windows)
    probs = open_set.calibrated(probs, rule)
    if windows is None:
        return probs
    from pipeline.views import mean_by_clip
    return mean_by_clip(probs, clip_of, rows)


def predict_rows(model, data, rows, *, scaling, rule=None, windows=None):
    """Decisions on dataset ``rows`` (:func:`clip_probabilities`): standardised
    as ``model`` was trained, then the open-set ``rule`` (if any) applied to
    the calibrated probabilities."""
    probs = clip_probabilities(lambda x: predict_proba(model, x), data, rows, scaling=scaling,
                               windows=windows, rule=rule)
    return open_set.decide(probs, rule, data["label_names"])


def evaluate_rows(model, data, rows, *, scaling, rule=None, windows=None):
    """Metrics of ``model`` (with ``rule``) on dataset ``rows``."""
    return evaluation.classification_metrics(data["labels"][rows],
                                             predict_rows(model, data, rows, scaling=scaling,
                                                          rule=rule, windows=windows),
                                             data["label_names"])


def fold_plan(folds):
    """The --folds setting: None (no cross-validation), an int k >= 2, or
    "source" (leave one source out)."""
    text = str(folds).strip().lower()
    if text == "source":
        return "source"
    if text.isdigit() and (int(text) == 0 or int(text) >= 2):
        return int(text) or None
    raise PipelineError(f"--folds={folds!r}: expected 0 (none), a number of folds >= 2, "
                        "or 'source' (leave one source out)")


def cross_validate(data, cfg, plan, pool, *, windows=None):
    """Train and test on every split of ``plan`` (copies from ``pool``,
    ``windows`` from :func:`clip_windows`): per split, and pooled over all
    held-out predictions (one macro-F1, per class)."""
    splits = list(evaluation_splits(data, plan, val_fraction=cfg.val_fraction, seed=cfg.seed))

    def predict_split(k, split):
        model, _, scaling = fit(data, split.train, split.validation, cfg, pool=pool,
                                windows=windows, progress_desc=f"{split.name} ({k}/{len(splits)})")
        return predict_rows(model, data, split.test, scaling=scaling,
                            windows=windows,
                            rule=fit_open_set(model, data, split.validation, scaling=scaling,
                                              cfg=cfg, windows=windows))

    pooled = held_out_predictions(len(data["labels"]), splits, predict_split, jobs=cfg.jobs)
    result = summarise_splits(data, plan, splits, pooled)
    print(folds_text(result), end="")
    return result


# ----------------------------------------------------------------------------

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
    if cfg.unlabelled and not cfg.distil_from:
        raise PipelineError("--unlabelled needs --distil_from=FOLDER: a teacher labels that "
                            "audio")
    if cfg.ir_dir and not Path(cfg.ir_dir).is_dir():
        raise PipelineError(f"--ir_dir={cfg.ir_dir}: no such folder of impulse responses")
    fold_plan(cfg.folds)


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


def check_finite_weights(model, learning_rate):
    """Refuse to save a model whose training diverged (NaN or infinite weights)."""
    if not all(np.all(np.isfinite(w)) for w in model.get_weights()):
        raise PipelineError(f"training diverged: the model has NaN or infinite weights, so it "
                            f"was not saved. Lower --learning_rate (now {learning_rate}).")


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
    if cfg.model != "pretrained":
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
    print(f"epochs run: {meta['epochs_run']} (best weights kept)")
    if rule["background"]:
        print(f"open set: temperature {rule['temperature']:.2f}; an event class needs a "
              f"calibrated probability of {rule['min_probability']:.2f}, else "
              f"'{rule['background']}'")
    print(evaluation.report_text(metrics, "test split"), end="")
    print(f"saved {paths['keras']}, {paths['meta']}; reports in {cfg.report_dir}/")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_script(main)
