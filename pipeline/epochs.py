"""What each training epoch sees: every training clip once, plus augmented
copies of it drawn afresh from the cached pool each epoch.

Drawing per epoch lets a run see all of a clip's cached copies over its
epochs while each epoch stays short (one or two copies per clip), which is
most of what makes a fold cheap. Draws are a pure function of the seed and
the epoch, so a run is repeatable.
"""

import math

import numpy as np


def per_group(of, count, rng):
    """Positions of up to ``count`` random entries of each value of ``of``
    (in increasing order of position)."""
    of = np.asarray(of, dtype=np.int64)
    rank = np.empty(len(of), np.int64)
    order = np.lexsort((rng.random(len(of)), of))  # by group, random within
    starts = np.searchsorted(of[order], of[order], side="left")
    rank[order] = np.arange(len(of)) - starts
    return np.flatnonzero(rank < count)


def epoch_rows(copy_of, n_clips, *, copies, epoch, seed, redraw=True, view_of=None):
    """Row numbers of one epoch, shuffled: rows ``0..n_clips-1`` are the
    clips, row ``n_clips + k`` is copy ``k``. With ``view_of``, the first
    ``len(view_of)`` rows are views of the clips instead (e.g. every window,
    :mod:`pipeline.views`) and each epoch takes one view of each clip,
    drawn afresh; the copies follow them.

    Parameters
    ----------
    copy_of : np.ndarray of int, shape (n_copies,)
        The clip (0..n_clips-1) each copy is of.
    n_clips : int
    copies : int
        Copies per clip in each epoch (fewer when a clip has fewer).
    epoch : int
    seed : int
    redraw : bool
        False: the same copies every epoch (only the order changes).
    view_of : np.ndarray of int, shape (n_views,), optional
        The clip each view is of; every clip has at least one.

    Returns
    -------
    np.ndarray of int, shape (n_clips + chosen copies,)
    """
    chosen = per_group(copy_of, copies, np.random.default_rng([seed, epoch if redraw else 0]))
    if view_of is None:
        clips, first_copy = np.arange(n_clips), n_clips
    else:
        clips = per_group(view_of, 1, np.random.default_rng([seed, epoch, 3]))
        first_copy = len(view_of)
    rows = np.concatenate([clips, first_copy + chosen])
    return np.random.default_rng([seed, epoch, 1]).permutation(rows)


def epoch_plan(copy_of, n_clips, *, copies, epochs, seed, redraw=True, mixup=0.0,
               view_of=None):
    """Every epoch's rows (:func:`epoch_rows`), and with ``mixup`` (a Beta
    alpha) each copy's mixing partner (a random row of the same epoch) and
    its own weight (at least one half; 1 for the clips themselves).

    Returns
    -------
    rows, partners : np.ndarray of int, shape (epochs, rows per epoch)
    weights : np.ndarray of float32, shape (epochs, rows per epoch)
    """
    rows = np.stack([epoch_rows(copy_of, n_clips, copies=copies, epoch=e, seed=seed,
                                redraw=redraw, view_of=view_of) for e in range(epochs)])
    partners, weights = rows.copy(), np.ones(rows.shape, np.float32)
    first_copy = n_clips if view_of is None else len(view_of)
    if mixup > 0:
        rng = np.random.default_rng([seed, 2])
        partners = np.take_along_axis(rows, rng.integers(0, rows.shape[1], rows.shape), axis=1)
        weight = rng.beta(mixup, mixup, size=rows.shape).astype(np.float32)
        weights = np.where(rows >= first_copy, np.maximum(weight, 1 - weight), 1.0).astype(
            np.float32)
    return rows, partners, weights


def keras_batches(x, y, copy_of, n_clips, *, copies, batch_size, epochs, seed, redraw=True,
                  mixup=0.0, view_of=None, class_weight=None):
    """The arguments of ``model.fit`` that train on every epoch's batches
    (:func:`epoch_plan`): ``x`` (the batches), ``steps_per_epoch`` and
    ``class_weight``; for ``model.fit(**arguments, epochs=epochs, ...)``.

    With TensorFlow, the batches are a ``tf.data.Dataset`` whose rows are
    gathered inside TensorFlow, which costs no more per epoch than training
    on fixed arrays. When Keras runs on another backend, they are a
    generator of NumPy arrays carrying ``class_weight`` as per-row weights
    (Keras takes class weights with generators on no backend).

    ``x`` and ``y`` hold the clips' rows (or their views') first and then
    their copies'.
    """
    from pipeline.quiet import keras_backend
    rows, partners, weights = epoch_plan(copy_of, n_clips, copies=copies, epochs=epochs,
                                         seed=seed, redraw=redraw, mixup=mixup, view_of=view_of)
    steps = math.ceil(rows.shape[1] / batch_size)
    if keras_backend() != "tensorflow":
        batches = numpy_batches(x, y, (rows, partners, weights), batch_size=batch_size,
                                mixup=mixup, class_weight=class_weight)
        return {"x": batches, "steps_per_epoch": steps, "class_weight": None}
    import tensorflow as tf
    x, y = tf.constant(x), tf.constant(y)

    def batch(index, partner, weight):
        if mixup <= 0:
            return tf.gather(x, index), tf.gather(y, index)
        w = weight[:, None]
        return (w * tf.gather(x, index) + (1 - w) * tf.gather(x, partner),
                w * tf.gather(y, index) + (1 - w) * tf.gather(y, partner))

    epochs_data = tf.data.Dataset.from_tensor_slices((rows, partners, weights))
    dataset = epochs_data.flat_map(
        lambda r, p, w: tf.data.Dataset.from_tensor_slices((r, p, w)).batch(batch_size))
    return {"x": dataset.map(batch).prefetch(2), "steps_per_epoch": steps,
            "class_weight": class_weight}


def numpy_batches(x, y, plan, *, batch_size, mixup, class_weight=None):
    """The batches of :func:`keras_batches` as NumPy arrays, epoch after
    epoch (``plan``: the rows, partners and weights of :func:`epoch_plan`):
    (x, y), or with ``class_weight`` ({class: weight}) (x, y, the weight of
    each row's most likely class), as Keras weighs rows by class."""
    table = None
    if class_weight:
        table = np.array([class_weight[c] for c in range(y.shape[1])], np.float32)
    for order, partner_rows, weight_rows in zip(*plan):
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            xb, yb = x[index], y[index]
            if mixup > 0:
                partner = partner_rows[start:start + batch_size]
                w = weight_rows[start:start + batch_size, None]
                xb, yb = w * xb + (1 - w) * x[partner], w * yb + (1 - w) * y[partner]
            yield (xb, yb) if table is None else (xb, yb, table[yb.argmax(axis=1)])
