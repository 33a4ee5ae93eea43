"""Training, as train_16k.py runs it: leakage-safe checks, the training set
(windows, augmented copies, synthetic noises, distillation targets), the
epochs with early stopping, and cross-validation over folds or sources."""

import numpy as np

from pipeline import settings
from pipeline.clip_decisions import fit_open_set, predict_proba, predict_rows
from pipeline.distillation import distilled_targets
from pipeline.errors import PipelineError
from pipeline.networks import architecture, build_model, layer_units
from pipeline.splits import evaluation_splits, folds_text, held_out_predictions, summarise_splits
from pipeline.standardisation import fit_standardisation, standardise


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
        if not len(indices):  # the seed's recipe has no validation split
            continue
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


def augmentation_pool(data, cfg):
    """Every clip's AUGMENT_POOL augmented copies (cached beside the
    dataset), or None without augmentation. Made once per run and shared by
    every fold."""
    if cfg.recipe == "seed" or not cfg.augment or cfg.augment_copies < 1:
        return None
    from pipeline import copies
    return copies.all_copies(data, **copy_settings(data, cfg))


def copy_settings(data, cfg):
    """The settings that make the augmented copies (:mod:`pipeline.copies`)."""
    return dict(pool=cfg.augment_pool, dataset=cfg.dataset, spec=cfg.spec_augment,
                ir_dir=cfg.ir_dir, ir_probability=cfg.ir_probability,
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
    if cfg.recipe == "seed" or not cfg.every_patch:
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
    copy_index : np.ndarray of int, shape (n_copies,): which of its clip's
        copies in ``pool`` each is
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
    copy_of = copy_index = np.zeros(0, np.int64)
    if pool is not None:
        from pipeline.copies import training_copies
        extra, of, copy_index = training_copies(*pool, train, copies=pool[0].shape[1],
                                                seed=cfg.seed)
        rng = np.random.default_rng(cfg.seed + 1)
        if cfg.freq_mixstyle > 0 and data["feature_config"].input_shape:
            extra = augment.freq_mixstyle(extra, data["feature_config"].input_shape, rng,
                                          probability=cfg.freq_mixstyle,
                                          alpha=cfg.mixstyle_alpha)
        x = np.concatenate([x, extra])
        labels = np.concatenate([labels, data["labels"][of]])
        copy_of = np.array([position[int(clip)] for clip in of], np.int64)
    y = np.eye(len(data["label_names"]), dtype=np.float32)[labels]
    return x.astype(np.float32), y, copy_of, copy_index, view_of


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


# The settings the seed's method reads (--recipe=seed); any other left at its
# default, or train_16k.py refuses it as not part of that method.
SEED_RECIPE_USES = frozenset({
    "dataset", "model_dir", "report_dir", "recipe", "architecture", "hidden_layers", "dropout",
    "folds", "seed", "jobs", "replace_model", "learning_rate", "epochs", "batch_size",
    "test_fraction",
    "window_s", "hop_s", "smooth_windows", "threshold", "min_event_s", "background_classes"})


def recipe_split(cfg, train, validation):
    """The training and validation rows a recipe uses: the seed's method has
    no validation split (its clips train too); the default keeps both."""
    if cfg.recipe == "seed":
        return np.sort(np.concatenate([train, validation])), np.zeros(0, np.int64)
    return train, validation


def fit_seed(data, train, cfg, *, progress_desc):
    """The seed's training, literally: its MLP (HIDDEN_LAYERS, DROPOUT,
    softmax out, :func:`pipeline.networks.build_model`) on each training
    clip's whole-clip features as they are, categorical cross-entropy, Adam
    at LEARNING_RATE, EPOCHS epochs of shuffled BATCH_SIZE batches. No
    validation split, early stopping, schedule, class weights, augmentation,
    windows or standardisation: none of them was in the seed.

    Returns
    -------
    model, history dict, None (no input standardisation)
    """
    import keras

    from pipeline.progress import keras_callback
    keras.utils.set_random_seed(cfg.seed)
    n_classes = len(data["label_names"])
    x = np.asarray(data["features"][train], np.float32)
    y = np.eye(n_classes, dtype=np.float32)[data["labels"][train]]
    model = build_model(x.shape[1], n_classes, "mlp", layer_units(cfg.hidden_layers,
                                                                  "hidden_layers"),
                        dropout=cfg.dropout, learning_rate=cfg.learning_rate, seed=cfg.seed)
    callbacks = [keras_callback(cfg.epochs, progress_desc)] if progress_desc else []
    history = model.fit(x, y, epochs=cfg.epochs, batch_size=cfg.batch_size, shuffle=True,
                        verbose=0, callbacks=callbacks)
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}, None


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
    if cfg.recipe == "seed":
        return fit_seed(data, train, cfg, progress_desc=progress_desc)
    config = data["feature_config"]
    n_classes = len(data["label_names"])
    kind, units = architecture(cfg, config)
    x_train, y_train, copy_of, copy_index, view_of = augmented_training_set(
        data, train, cfg, pool, windows=windows)
    if cfg.distil_from:
        from pipeline import distillation
        x_train, y_train, view_of = distillation.training_targets(
            data, train, cfg, x_train, y=y_train, copy_of=copy_of, view_of=view_of,
            copy_index=copy_index,
            copy_settings=copy_settings(data, cfg) if pool is not None else None)
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
        from pipeline.pretrained import fit_pretrained
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
        train, validation = recipe_split(cfg, split.train, split.validation)
        model, _, scaling = fit(data, train, validation, cfg, pool=pool, windows=windows,
                                progress_desc=f"{split.name} ({k}/{len(splits)})")
        return predict_rows(model, data, split.test, scaling=scaling,
                            windows=windows,
                            rule=fit_open_set(model, data, validation, scaling=scaling,
                                              cfg=cfg, windows=windows))

    pooled = held_out_predictions(len(data["labels"]), splits, predict_split, jobs=cfg.jobs)
    result = summarise_splits(data, plan, splits, pooled)
    print(folds_text(result), end="")
    return result


def check_finite_weights(model, learning_rate):
    """Refuse to save a model whose training diverged (NaN or infinite weights)."""
    if not all(np.all(np.isfinite(w)) for w in model.get_weights()):
        raise PipelineError(f"training diverged: the model has NaN or infinite weights, so it "
                            f"was not saved. Lower --learning_rate (now {learning_rate}).")
