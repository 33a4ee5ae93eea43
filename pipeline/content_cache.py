"""Rows computed from files, cached by the files' content: features,
augmented copies, windows. A key is a hash of a file's bytes, not its path,
size or time: two fixed-length clips swapped between class folders with
their timestamps restored look unchanged to stat(), not to a hash. A cache
holds one identity (the settings its rows were made with) and is replaced
whole, atomically; a missing, damaged or other cache only costs time."""

import hashlib
import os

import numpy as np

from pipeline.files import file_digest, write_npz


def file_key(path):
    """A hash of the file's bytes (BLAKE2b, 128 bits), or None when it
    cannot be read; bench/bench_dataset.py measures its cost."""
    if not os.path.isfile(path):
        return None  # missing, or a device or FIFO: never read (the extraction names it)
    try:
        return file_digest(path, hashlib.blake2b(digest_size=16))
    except OSError:
        return None


def load_rows(path, ident, *, width, columns=()):
    """The rows a cache file holds for ``ident``.

    Parameters
    ----------
    path : str or Path
    ident : str
        The settings the rows must have been made with.
    width : int
        Each row's length.
    columns : sequence of str
        Extra per-row arrays saved with :func:`save_rows`.

    Returns
    -------
    rows : dict, key tuple -> np.ndarray of shape (width,)
    extra : dict, column -> np.ndarray, in the order of ``rows``
    Both empty when the file is missing, damaged, tampered with (a wrong
    shape or a non-finite row) or made for another identity.
    """
    empty = ({}, {c: np.zeros(0) for c in columns})
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["identity"]) != ident:
                return empty
            keys, rows = npz["keys"], npz["rows"]
            extra = {c: npz[c] for c in columns}
            if (rows.ndim != 2 or rows.shape != (len(keys), width)
                    or not np.isfinite(rows).all()
                    or any(len(v) != len(keys) for v in extra.values())):
                return empty  # tampered or damaged: compute again rather than trust it
            return {tuple(str(k).split("|")): row for k, row in zip(keys, rows)}, extra
    except Exception:
        return empty


def save_rows(path, ident, entries, *, width, **columns):
    """Write ``entries`` (key tuple -> row) and per-row ``columns`` (in the
    order of ``sorted(entries)``) for ``ident``, atomically."""
    keys = sorted(entries)
    write_npz(path, identity=np.asarray(ident),
              keys=np.asarray(["|".join(k) for k in keys], dtype=str),
              rows=np.stack([entries[k] for k in keys]) if keys
              else np.zeros((0, width), np.float32), **columns)
