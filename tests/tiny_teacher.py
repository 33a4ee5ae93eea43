"""A tiny stand-in for a pretrained AudioSet tagger, built in seconds: the
same interface as EfficientAT's exported mn04_as (a ``serving_default``
signature ``mel`` (B, 1, 128, T) -> ``logits``, ``embedding``, ``hidden``)
and the same kinds of operators (transpose, pad, convolution, depthwise
convolution, hard swish, mean, squeeze-excitation multiply, residual add,
fully connected), with random weights, plus a class list CSV."""

import csv
from pathlib import Path

import numpy as np

NAMES = ["Speech", "Water tap, faucet", "Alarm", "Music", "Rain"]


def make_teacher(folder, *, names=NAMES, seed=0):
    """Write ``tiny.tflite`` and ``class_labels_indices.csv`` into ``folder``."""
    import tensorflow as tf
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = lambda *shape: tf.constant(rng.normal(0, 0.3, shape).astype(np.float32))
    conv1, dw, se1, se2, conv2 = w(3, 3, 1, 8), w(3, 3, 8, 1), w(8, 4), w(4, 8), w(1, 1, 8, 16)
    hidden_w, out_w = w(16, 12), w(12, len(names))
    b = lambda n: tf.constant(rng.normal(0, 0.1, n).astype(np.float32))
    b1, b2, bh, bo = b(8), b(16), b(12), b(len(names))

    def hard_swish(x):
        return x * tf.nn.relu6(x + 3.0) / 6.0

    @tf.function(input_signature=[tf.TensorSpec([None, 1, 128, None], tf.float32, name="mel")])
    def serve(mel):
        x = tf.transpose(mel, [0, 2, 3, 1])
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        x = hard_swish(tf.nn.conv2d(x, conv1, 2, "VALID") + b1)
        y = tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "SAME")
        gate = tf.sigmoid(tf.matmul(tf.nn.relu(tf.matmul(tf.reduce_mean(y, [1, 2]), se1)), se2))
        y = y * tf.reshape(gate, [-1, 1, 1, 8]) + x
        y = hard_swish(tf.nn.conv2d(y, conv2, 1, "VALID") + b2)
        embedding = tf.reduce_mean(y, [1, 2])
        hidden = hard_swish(tf.matmul(embedding, hidden_w) + bh)
        return {"logits": tf.matmul(hidden, out_w) + bo, "embedding": embedding,
                "hidden": hidden}

    import tempfile
    module = tf.Module()
    module.serve = serve
    with tempfile.TemporaryDirectory() as saved:  # a SavedModel keeps the signature's names
        tf.saved_model.save(module, saved, signatures={"serving_default": serve})
        blob = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
    (folder / "tiny.tflite").write_bytes(blob)
    with open(folder / "class_labels_indices.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([k, f"/m/{k}", n] for k, n in enumerate(names))
    return folder
