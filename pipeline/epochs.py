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
                  mixup=0.0, view_of=None):
    """A ``tf.data.Dataset`` of every epoch's batches (:func:`epoch_plan`),
    and the batches per epoch: for ``model.fit(dataset, epochs=epochs,
    steps_per_epoch=...)``. The rows are gathered inside TensorFlow, which
    costs no more per epoch than training on fixed arrays.

    ``x`` and ``y`` hold the clips' rows (or their views') first and then
    their copies'.
    """
    import tensorflow as tf
    rows, partners, weights = epoch_plan(copy_of, n_clips, copies=copies, epochs=epochs,
                                         seed=seed, redraw=redraw, mixup=mixup, view_of=view_of)
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
    return dataset.map(batch).prefetch(2), math.ceil(rows.shape[1] / batch_size)
