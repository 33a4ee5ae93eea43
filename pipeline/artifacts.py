"""The files the stages hand to each other: the dataset (``.npz``) and the
model folder (Keras model, metadata JSON, labels, TFLite files, C sources).

Both the dataset and the model metadata carry the feature configuration
they were made with (:class:`features.FeatureConfig`). A stage that consumes
them computes features from that stored configuration; only the stages that
make them (make_dataset_16k.py, train_16k.py) compare it with the current
constants in features.py. Nothing is unpickled.
"""

import json
from pathlib import Path

import numpy as np

import features
from pipeline.clips import check_label
from pipeline.errors import PipelineError
from pipeline.files import file_sha256, read_json, write_npz

DATASET_KEYS = ("features", "labels", "label_names", "paths", "groups", "feature_config")
MODEL_NAME = "model_16k"  # models/model_16k.keras, .json, _int8.tflite, ...


def skipped_report_path(dataset):
    """<dataset>_skipped.csv: every clip that was left out, with the reason."""
    dataset = Path(dataset)
    return dataset.with_name(dataset.stem + "_skipped.csv")


def save_dataset(path, feature_matrix, labels, *, label_names, paths, groups, config,
                 sources=None):
    """Write the dataset file that make_dataset_16k.py produces.

    Parameters
    ----------
    config : features.FeatureConfig
        Stored as JSON beside the features.
    sources : list of str, optional
        Each clip's source (repository, microphone, site), for
        leave-one-source-out evaluation; "" when unknown.
    """
    write_npz(
        path,
        features=np.asarray(feature_matrix, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        label_names=np.asarray(label_names, dtype=str),
        paths=np.asarray(paths, dtype=str),
        groups=np.asarray(groups, dtype=str),
        sources=np.asarray(sources if sources is not None else [""] * len(paths), dtype=str),
        feature_config=np.asarray(json.dumps(config.to_dict(), sort_keys=True)),
    )


def stored_config(stored, source, fix):
    """The FeatureConfig stored in an artifact, or PipelineError naming ``source``.

    Also refuses a configuration of another FEATURE_VERSION: this code
    computes features one way only.
    """
    if not stored:
        raise PipelineError(f"{source}: no feature configuration stored. {fix}")
    try:
        config = features.FeatureConfig.from_dict(stored)
    except ValueError as err:
        raise PipelineError(f"{source}: {err}. {fix}") from None
    if config.version != features.FEATURE_VERSION:
        raise PipelineError(f"{source}: made with feature code version {config.version}; this "
                            f"features.py computes version {features.FEATURE_VERSION}. {fix}")
    return config


def check_current(config, source, fix):
    """Raise PipelineError unless ``config`` is what features.py's constants
    give for its preset today (for the stages that make artifacts)."""
    changed = features.feature_config(config.preset).differences(config)
    if changed:
        details = ", ".join(f"{k}: {theirs!r} there, {mine!r} in features.py"
                            for k, mine, theirs in changed[:3])
        if len(changed) > 3:
            details += f", and {len(changed) - 3} more"
        raise PipelineError(f"{source}: made with a different feature configuration "
                            f"({details}). {fix}")


def load_dataset(path):
    """Load and validate a dataset written by :func:`save_dataset`.

    Returns
    -------
    dict
        ``features`` (N x D float32), ``labels`` (N int), ``label_names``,
        ``paths``, ``groups`` and ``sources`` (lists of str), ``feature_config``
        (FeatureConfig), ``sha256`` of the file.
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
            # datasets made before sources were stored have none
            sources = [str(v) for v in npz["sources"]] if "sources" in npz.files else None
        stored = json.loads(str(data["feature_config"]))
    except PipelineError:
        raise
    except Exception as err:  # zipfile, ValueError, OSError: all mean "corrupt"
        raise PipelineError(f"{path}: cannot read dataset ({err}). {rebuild}") from None
    config = stored_config(stored, path, rebuild)
    x = data["features"]
    sources = sources if sources is not None else [""] * len(x)
    if (x.ndim != 2 or len(x) != len(data["labels"]) or x.shape[1] != config.n_features
            or len(sources) != len(x)):
        raise PipelineError(f"{path}: features, labels and feature configuration do not "
                            f"line up. {rebuild}")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
        raise PipelineError(f"{path}: {bad} rows have NaN or infinite features. {rebuild}")
    return dict(features=x.astype(np.float32), labels=data["labels"].astype(np.int64),
                label_names=[str(s) for s in data["label_names"]],
                paths=[str(s) for s in data["paths"]],
                groups=[str(s) for s in data["groups"]], sources=sources,
                feature_config=config, sha256=file_sha256(path))


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
        "frontend_header": base / f"{MODEL_NAME}_frontend.h",
        "net_header": base / f"{MODEL_NAME}_net.h",
    }


def load_model_metadata(model_dir):
    """Load ``model_16k.json``; its ``feature_config`` becomes a FeatureConfig.

    Raises
    ------
    PipelineError
        If the file is missing, lacks labels or feature configuration, its
        configuration cannot be computed by this features.py, or its labels
        or input standardisation do not fit that configuration.
    """
    path = model_paths(model_dir)["meta"]
    meta = read_json(path, "model metadata", "python train_16k.py")
    retrain = "Retrain with `python train_16k.py`."
    if not isinstance(meta, dict):
        raise PipelineError(f"{path}: not model metadata. {retrain}")
    missing = [k for k in ("labels", "feature_config") if not meta.get(k)]
    if missing:
        raise PipelineError(f"{path}: model metadata lacks {', '.join(missing)}. {retrain}")
    meta["feature_config"] = stored_config(
        meta["feature_config"], path,
        "Rebuild the dataset and retrain (make_dataset_16k.py, train_16k.py).")
    check_labels(meta["labels"], path)
    check_standardisation(meta.get("input_standardisation"), meta["feature_config"], path)
    from pipeline.open_set import check_rule
    check_rule(meta.get("open_set"), meta["labels"], path)
    return meta


def check_labels(labels, source):
    """At least two distinct plain class names."""
    if (not isinstance(labels, list) or len(labels) < 2
            or not all(isinstance(label, str) for label in labels)
            or len(set(labels)) != len(labels)):
        raise PipelineError(f"{source}: labels must be a list of at least two distinct class "
                            f"names, got {labels!r}. Retrain with `python train_16k.py`.")
    for label in labels:
        check_label(label, source)


def check_standardisation(scaling, config, source):
    """The stored input standardisation: present exactly when the preset
    asks for it, one finite mean and positive finite std per feature."""
    retrain = "Retrain with `python train_16k.py`."
    if not config.standardise:
        if scaling:
            raise PipelineError(f"{source}: a {config.preset} model stores no input "
                                f"standardisation, but this one does. {retrain}")
        return
    if not isinstance(scaling, dict) or not {"mean", "std"} <= set(scaling):
        raise PipelineError(f"{source}: input_standardisation (mean and std) missing. {retrain}")
    try:
        mean = np.asarray(scaling["mean"], dtype=np.float64)
        std = np.asarray(scaling["std"], dtype=np.float64)
    except (TypeError, ValueError):
        raise PipelineError(f"{source}: input_standardisation is not numeric. {retrain}") from None
    n = config.n_features
    if mean.shape != (n,) or std.shape != (n,):
        raise PipelineError(f"{source}: input_standardisation has {mean.size} means and "
                            f"{std.size} stds for {n} features. {retrain}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise PipelineError(f"{source}: input_standardisation holds NaN, infinite or "
                            f"non-positive values. {retrain}")


def check_model_shape(n_inputs, n_outputs, meta, model_path):
    """The model's input and output sizes against the metadata beside it."""
    config, labels = meta["feature_config"], meta["labels"]
    if n_inputs != config.n_features:
        raise PipelineError(f"{model_path}: the model takes {n_inputs} inputs, but its "
                            f"metadata describes {config.n_features} features. The files come "
                            "from different runs: retrain and convert again.")
    if n_outputs != len(labels):
        raise PipelineError(f"{model_path}: the model has {n_outputs} outputs, but its "
                            f"metadata lists {len(labels)} labels {labels}. The files come "
                            "from different runs: retrain and convert again.")


def check_belongs(model_path, meta):
    """Raise PipelineError unless ``model_path`` is the Keras or TFLite file
    that this metadata was written with (train_16k.py stores the Keras
    checksum, model_conv.py the checksums of what it converted), so that a
    run killed between two writes never pairs a new model with old metadata.
    """
    model_path = Path(model_path)
    digest = file_sha256(model_path)
    if model_path.suffix == ".keras":
        if digest != meta.get("keras_sha256"):
            raise PipelineError(f"{model_path}: not the Keras model that "
                                f"{MODEL_NAME}.json describes (an interrupted or mixed "
                                "training run?). Run `python train_16k.py` again.")
        return
    converted = meta.get("conversion", {}).get("sha256", {})
    if digest not in converted.values():
        raise PipelineError(f"{model_path}: not converted from the model that "
                            f"{MODEL_NAME}.json describes (trained again since, or the "
                            "conversion was interrupted). Run `python model_conv.py`.")
    paths = model_paths(model_path.parent)
    for role, expected in converted.items():  # the folder is one set: every file it vouches for
        path = paths.get(role)
        if path is not None and path.is_file() and file_sha256(path) != expected:
            raise PipelineError(f"{path}: not the file that {MODEL_NAME}.json describes (an "
                                "interrupted model_conv.py or calibrate.py run, or edited by "
                                "hand). Run `python model_conv.py` again.")


def load_keras_model(path, meta):
    """The trained Keras model at ``path``, checked against its metadata.

    Loaded in safe mode (no code from the file runs); a missing, corrupt or
    mismatched file is a PipelineError.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: Keras model not found. Run `python train_16k.py` first.")
    check_belongs(path, meta)
    from pipeline.quiet import import_keras
    keras = import_keras()
    try:
        model = keras.models.load_model(path, safe_mode=True)
    except Exception as err:  # zip, HDF5, JSON and Keras' own errors all mean "unusable"
        raise PipelineError(f"{path}: cannot load the Keras model ({type(err).__name__}: "
                            f"{str(err)[:200]}). Run `python train_16k.py` again.") from None
    check_model_shape(model.input_shape[-1], model.output_shape[-1], meta, path)
    return model
