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
    return dataset.with_name(f"{dataset.stem}_teacher_{tutor.sha256[:12]}.npz")


def check_preset(config, source):
    """PipelineError unless ``config`` is what the backbone reads."""
    if config.preset != "efficientat":
        raise PipelineError(f"{source}: --model=pretrained needs the backbone's own features; "
                            "build the dataset with `python make_dataset_16k.py "
                            "--features=efficientat`")


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


def compose(model_path, config, head, *, mean, std, freeze=True):
    """The whole model: flat ``efficientat`` patch (frames * mels) ->
    backbone embedding -> ``head``'s layers (its first Dense layer reading
    raw embeddings through :func:`fold_scaling`).

    Parameters
    ----------
    model_path : Path of the teacher's float TFLite file
    config : features.FeatureConfig of the ``efficientat`` preset
    head : keras.Model trained on standardised embeddings (Dropout, Dense)
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
    if "embedding" not in full.output:
        raise PipelineError(f"{model_path}: the teacher has no 'embedding' output")
    backbone = keras.Model(full.input, full.output["embedding"], name="backbone")
    backbone.trainable = not freeze
    inputs = keras.Input(shape=(frames * mels,))
    x = keras.layers.Reshape((frames, mels))(inputs)
    x = keras.layers.Permute((2, 1))(x)  # (mels, frames), as the tagger reads a log-mel
    x = keras.layers.Reshape((1, mels, frames))(x)
    x = backbone(x)
    first = True
    for layer in head.layers[1:]:  # skip the head's Input
        config_ = layer.get_config()
        config_.pop("name", None)
        copy = layer.__class__.from_config(config_)
        x = copy(x)
        weights = layer.get_weights()
        if first and layer.__class__.__name__ == "Dense":
            weights = list(fold_scaling(weights[0], weights[1], mean, std))
            first = False
        copy.set_weights(weights)
    return keras.Model(inputs, x, name="pretrained")


def teacher_digest(tutor):
    """What the metadata records of the backbone: file name and checksum."""
    return {"file": tutor.model_path.name, "sha256": tutor.sha256,
            "class_list": tutor.class_list.name,
            "class_list_sha256": hashlib.sha256(tutor.class_list.read_bytes()).hexdigest()}
