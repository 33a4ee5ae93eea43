"""Reading and writing the files the pipeline stages hand to each other.

The dataset (``.npz``) and the model metadata (``.json``) both carry the
feature configuration, so every loader here checks it against
``features.feature_config()``: a model can never be fed features it was not
trained on. Everything is written atomically (temporary file in the same
folder, then ``os.replace``), so an interrupted run never leaves a
half-written file and never destroys the previous one. Nothing is unpickled.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

import features

DATASET_KEYS = ("features", "labels", "label_names", "paths", "groups",
                "feature_config")


class PipelineError(Exception):
    """A problem with the user's input that has a clear fix; scripts print
    the message and exit with status 2 instead of a traceback."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary name keeps ``path``'s suffix because some writers (Keras,
    matplotlib) choose the format from it. On any error, including
    KeyboardInterrupt, the temporary file is removed and ``path`` is
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                                   suffix=f".tmp{path.suffix}")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path, text):
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_npz(path, **arrays):
    """Save arrays to an ``.npz`` file atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def save_figure(fig, path):
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)


def read_json(path, what, made_by):
    """Load a JSON file or raise PipelineError naming the command that makes it."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: {what} not found. Run `{made_by}` first.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: {what} is not valid JSON ({err}). "
                            f"Run `{made_by}` again.") from None


def file_sha256(path):
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_dataset(path, feature_matrix, labels, label_names, paths, groups,
                 feature_config):
    """Write the dataset file that make_dataset_16k.py produces."""
    write_npz(
        path,
        features=np.asarray(feature_matrix, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        label_names=np.asarray(label_names, dtype=str),
        paths=np.asarray(paths, dtype=str),
        groups=np.asarray(groups, dtype=str),
        feature_config=np.asarray(json.dumps(feature_config, sort_keys=True)),
    )


def check_feature_config(stored, source, fix):
    """Raise PipelineError unless ``stored`` equals the current configuration.

    Parameters
    ----------
    stored : dict or None
        The configuration saved in a dataset or model.
    source : str or Path
        The file it came from, for the message.
    fix : str
        What the user should run to rebuild it.
    """
    current = features.feature_config()
    if not stored:
        raise PipelineError(f"{source}: no feature configuration stored. {fix}")
    if stored != current:
        changed = sorted(k for k in set(stored) | set(current)
                         if stored.get(k) != current.get(k))
        details = ", ".join(f"{k}: {stored.get(k)!r} there, {current.get(k)!r} "
                            f"in features.py" for k in changed[:3])
        if len(changed) > 3:
            details += f", and {len(changed) - 3} more"
        raise PipelineError(f"{source}: made with a different feature "
                            f"configuration ({details}). {fix}")


def load_dataset(path, check_config=True):
    """Load and validate a dataset written by :func:`save_dataset`.

    Returns
    -------
    dict
        ``features`` (N x D float32), ``labels`` (N int), ``label_names``,
        ``paths`` and ``groups`` (lists of str), ``feature_config`` (dict),
        ``sha256`` of the file.
    """
    path = Path(path)
    rebuild = "Rebuild it with `python make_dataset_16k.py`."
    if not path.is_file():
        raise PipelineError(f"{path}: dataset not found. Build it with "
                            "`python make_dataset_16k.py` (or `--demo`).")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in DATASET_KEYS if k not in npz.files]
            if missing:
                raise PipelineError(f"{path}: not a dataset from make_dataset_16k.py "
                                    f"(missing {', '.join(missing)}). {rebuild}")
            data = {k: npz[k] for k in DATASET_KEYS}
    except PipelineError:
        raise
    except Exception as err:  # zipfile, ValueError, OSError: all mean "corrupt"
        raise PipelineError(f"{path}: cannot read dataset ({err}). {rebuild}") from None
    config = json.loads(str(data["feature_config"]))
    if check_config:
        check_feature_config(config, path, rebuild)
    x = data["features"]
    if x.ndim != 2 or len(x) != len(data["labels"]):
        raise PipelineError(f"{path}: features and labels do not line up. {rebuild}")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
        raise PipelineError(f"{path}: {bad} rows have NaN or infinite features. {rebuild}")
    return dict(features=x.astype(np.float32), labels=data["labels"].astype(np.int64),
                label_names=[str(s) for s in data["label_names"]],
                paths=[str(s) for s in data["paths"]],
                groups=[str(s) for s in data["groups"]],
                feature_config=config, sha256=file_sha256(path))


def import_tensorflow():
    """Import TensorFlow without its start-up log spam (set before import)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # e.g. retracing notes during cross-validation
    return tf


@contextlib.contextmanager
def silence_native_output(fd=2):
    """Send what C/C++ code writes to ``fd`` (stderr by default) to /dev/null,
    e.g. TFLite Micro's messages while probing arena sizes."""
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def run_script(main):
    """Run a script's ``main()``; turn PipelineError into a one-line message
    and exit status 2 instead of a traceback."""
    import sys
    try:
        status = main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; files from earlier runs are untouched", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


MODEL_NAME = "model_16k"  # models/model_16k.keras, .json, _int8.tflite, ...


def model_paths(model_dir):
    """Every file a model directory holds, by role."""
    base = Path(model_dir)
    return {
        "keras": base / f"{MODEL_NAME}.keras",
        "meta": base / f"{MODEL_NAME}.json",
        "labels": base / "labels.txt",
        "float_tflite": base / f"{MODEL_NAME}_float32.tflite",
        "int8_tflite": base / f"{MODEL_NAME}_int8.tflite",
        "c_header": base / f"{MODEL_NAME}_int8.h",
        "c_source": base / f"{MODEL_NAME}_int8.cc",
        "golden": base / f"{MODEL_NAME}_golden.json",
        "golden_header": base / f"{MODEL_NAME}_golden.h",
    }


def load_model_metadata(model_dir):
    """Load ``model_16k.json`` and check it against features.py.

    Raises
    ------
    PipelineError
        If the file is missing, lacks labels or feature configuration, or
        was made with another feature configuration.
    """
    path = model_paths(model_dir)["meta"]
    meta = read_json(path, "model metadata", "python train_16k.py")
    missing = [k for k in ("labels", "feature_config") if not meta.get(k)]
    if missing:
        raise PipelineError(f"{path}: model metadata lacks {', '.join(missing)}. "
                            "Retrain with `python train_16k.py`.")
    check_feature_config(meta["feature_config"], path,
                         "Rebuild the dataset and retrain (make_dataset_16k.py, train_16k.py).")
    return meta


def model_inputs(x, meta):
    """Features -> model inputs: the standardisation stored with the model
    (or none), applied the same way by every script."""
    x = np.asarray(x, dtype=np.float32)
    scaling = meta.get("input_standardisation")
    if not scaling:
        return x
    return ((x - np.asarray(scaling["mean"], np.float32))
            / np.asarray(scaling["std"], np.float32)).astype(np.float32)
