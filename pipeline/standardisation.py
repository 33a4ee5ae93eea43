"""Input standardisation: per-feature mean and std of the training rows,
stored with the model and applied identically by every stage."""

import numpy as np


def fit_standardisation(x_train, config):
    """Mean and std of ``x_train`` when ``config.standardise`` asks for it.

    Returns
    -------
    dict or None
        ``{"mean": [...], "std": [...]}`` (plain floats, for the metadata);
        a feature that never varies gets std 1 so that it maps to 0.
    """
    if not config.standardise:
        return None
    std = x_train.std(axis=0)
    return {"mean": [float(v) for v in x_train.mean(axis=0)],
            "std": [float(v) if v > 1e-6 else 1.0 for v in std]}


def standardise(x, scaling):
    """Features -> model inputs: ``(x - mean) / std``, or ``x`` itself when
    ``scaling`` is None."""
    x = np.asarray(x, dtype=np.float32)
    if not scaling:
        return x
    return ((x - np.asarray(scaling["mean"], np.float32))
            / np.asarray(scaling["std"], np.float32)).astype(np.float32)
