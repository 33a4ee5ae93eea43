"""The pretrained tier: a pretrained AudioSet tagger's backbone (rebuilt in
Keras with its own weights, :mod:`pipeline.tflite_keras`) with a head trained
on the user's classes.

Training the head alone needs the backbone's embedding of every training
row, which does not change while the backbone is frozen: those come from the
teacher's TFLite file once per row content (:class:`teacher.PatchCache`), and
the head trains on them in seconds. The head is then put on the Keras
backbone, with the embedding's standardisation folded into its weights, so
the saved model takes the ``efficientat`` features directly and converts to
full int8 like any other model.
"""

import hashlib
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError


def cache_path(dataset, tutor):
    """The teacher-output cache of a dataset file, one per teacher."""
    dataset = Path(dataset)
    return dataset.with_name(f"{dataset.stem}_teacher_{tutor.sha256[:12]}_v2.npz")


def check_preset(config, source):
    """PipelineError unless ``config`` is what the backbone reads."""
    if config.preset != "efficientat":
        raise PipelineError(f"{source}: --architecture=pretrained needs the backbone's own features; "
                            "build the dataset with `python make_dataset_16k.py "
                            "--features=efficientat`")


def head_features(outputs, head_input):
    """The backbone output the head reads, from a cache's (logits, embedding)."""
    logits, embedding = outputs
    if head_input == "embedding":
        return embedding
    if head_input == "logits":
        return logits
    raise PipelineError(f"--head_input={head_input!r}: expected 'logits' or 'embedding'")


def embedding_scaling(embedding):
    """Mean and std (std 1 where constant) of training embeddings."""
    std = embedding.std(axis=0)
    return embedding.mean(axis=0), np.where(std > 1e-8, std, 1.0)


def fold_scaling(kernel, bias, mean, std):
    """Weights of a Dense layer that reads raw embeddings and computes what
    ``kernel``, ``bias`` computed from ``(embedding - mean) / std``.

    Parameters
    ----------
    kernel : np.ndarray, shape (embedding size, units)
    bias : np.ndarray, shape (units,)
    mean, std : np.ndarray, shape (embedding size,)
    """
    folded = kernel / std[:, None]
    return folded.astype(np.float32), (bias - mean @ folded).astype(np.float32)


def fit_head(x, labels, n_classes, *, c, class_weight=None):
    """A softmax layer fitted as an L2-regularised logistic regression (the
    "linear probe": on dev16k v4 its LOSO beat a head trained by gradient
    descent with early stopping, 0.87 against 0.83, because it is regularised
    this strongly), on standardised inputs.

    Parameters
    ----------
    x : np.ndarray, shape (n, d): standardised backbone outputs
    labels : np.ndarray of int, shape (n,)
    c : float > 0, inverse regularisation strength (scikit-learn's C)
    class_weight : dict or None

    Returns
    -------
    kernel : np.ndarray, shape (d, n_classes); bias : shape (n_classes,)
    """
    from sklearn.linear_model import LogisticRegression
    present = np.unique(labels)
    if len(present) != n_classes:
        raise PipelineError(f"the head needs training rows of every class; found only "
                            f"{len(present)} of {n_classes}")
    model = LogisticRegression(C=c, class_weight=class_weight, max_iter=5000)
    model.fit(x, labels)
    kernel, bias = model.coef_.T, model.intercept_
    if n_classes == 2:  # scikit-learn keeps one column for two classes: softmax(-z/2, z/2)
        kernel, bias = np.hstack([-kernel / 2, kernel / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    return kernel.astype(np.float32), bias.astype(np.float32)


def compose(model_path, config, *, kernel, bias, mean, std, head_input="logits",
            freeze=True):
    """The whole model: flat ``efficientat`` patch (frames * mels) ->
    backbone output ``head_input`` -> softmax layer with ``kernel`` and
    ``bias`` fitted on standardised outputs (``mean``, ``std`` folded in by
    :func:`fold_scaling`).

    Parameters
    ----------
    model_path : Path of the teacher's float TFLite file
    config : features.FeatureConfig of the ``efficientat`` preset
    kernel, bias : the head's weights (:func:`fit_head`)
    mean, std : np.ndarray, shape (d,)
    head_input : "logits" or "embedding" (an output of the teacher)
    freeze : bool, the backbone's weights are not trained further

    Returns
    -------
    keras.Model (not compiled: it is saved, converted and run, not trained)
    """
    from pipeline import tflite_keras
    from pipeline.quiet import import_keras
    keras = import_keras()
    frames, mels = config.input_shape
    full = tflite_keras.keras_model(model_path, (1, mels, frames))
    if head_input not in full.output:
        raise PipelineError(f"{model_path}: the teacher has no {head_input!r} output (it has "
                            f"{', '.join(sorted(full.output))})")
    backbone = keras.Model(full.input, full.output[head_input], name="backbone")
    backbone.trainable = not freeze
    inputs = keras.Input(shape=(frames * mels,))
    x = keras.layers.Reshape((frames, mels))(inputs)
    x = keras.layers.Permute((2, 1))(x)  # (mels, frames), as the tagger reads a log-mel
    x = keras.layers.Reshape((1, mels, frames))(x)
    head = keras.layers.Dense(kernel.shape[1], activation="softmax", name="head")
    outputs = head(backbone(x))
    head.set_weights(list(fold_scaling(kernel, bias, mean, std)))
    return keras.Model(inputs, outputs, name="pretrained")


def teacher_digest(tutor):
    """What the metadata records of the backbone: file name and checksum."""
    return {"file": tutor.model_path.name, "sha256": tutor.sha256,
            "class_list": tutor.class_list.name,
            "class_list_sha256": hashlib.sha256(tutor.class_list.read_bytes()).hexdigest()}


def fit_pretrained(data, cfg, x_train, y_train, *, train, val, progress_desc, common):
    """The pretrained tier: a softmax head fitted as a regularised logistic
    regression (HEAD_C) on the frozen backbone's HEAD_INPUT of every training
    row (computed by the teacher file once per row content, cached beside the
    dataset), then put on the Keras backbone (:mod:`pipeline.pretrained`).
    Returns as :func:`fit`; the model reads the features themselves."""
    from pipeline import teacher
    from pipeline.training import class_weights
    tutor = teacher.Teacher(cfg.teacher)
    cache = teacher.PatchCache(tutor, cache_path(cfg.dataset, tutor))
    train_out = head_features(cache.outputs(x_train, progress_desc=progress_desc
                                                       and "backbone outputs"), cfg.head_input)
    val_out = head_features(cache.outputs(data["features"][val]), cfg.head_input)
    cache.save()
    mean, std = embedding_scaling(train_out)
    n_classes = len(data["label_names"])
    labels = y_train.argmax(axis=1)
    weights = (class_weights(data["labels"][train], n_classes, power=cfg.class_weight_power)
               if cfg.class_weights else None)
    kernel, bias = fit_head((train_out - mean) / std, labels, n_classes,
                                       c=cfg.head_c, class_weight=weights)
    history = {}
    for name, out, truth in (("", train_out, labels), ("val_", val_out, data["labels"][val])):
        logits = ((out - mean) / std) @ kernel + bias
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        history[f"{name}loss"] = [float(-np.mean(np.log(probs[np.arange(len(truth)), truth]
                                                        + 1e-12)))]
        history[f"{name}accuracy"] = [float(np.mean(probs.argmax(axis=1) == truth))]
    model = compose(tutor.model_path, data["feature_config"], kernel=kernel,
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

    from pipeline.training import fit_epochs
    keras.utils.set_random_seed(cfg.seed)
    model.compile(optimizer=keras.optimizers.Adam(cfg.fine_tune_rate),
                  loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    history = fit_epochs(model, x_train, y_train, cfg, epochs=cfg.fine_tune_epochs, mixup=0.0,
                         lower_rate=False, copy_of=common["copy_of"],
                         n_clips=common["n_clips"], view_of=common["view_of"],
                         validation=common["validation"], class_weight=common["class_weight"],
                         progress_desc=progress_desc and "fine-tuning")
    return {k: [float(v) for v in vals] for k, vals in history.items() if k != "learning_rate"}
