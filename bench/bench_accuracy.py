"""Measure every feature preset x model on the same folds, float and int8.

    python bench/bench_accuracy.py DATA_DIR [--manifest=CSV] [--out=reports/accuracy.md]

- Grouped, stratified 5-fold cross-validation (the same folds for every row):
  macro-F1 mean +/- std over folds, and per-class F1 of the pooled predictions.
- Leave-one-source-out, when the manifest has a source column
  (``source_repo_or_package`` in dev16k): train on every source but one,
  predict the one left out; the predictions of all left-out sources are
  pooled into one macro-F1.
- Cost: feature extraction ms per clip (one process), int8 size, parameters.

Every row trains with train_16k.py's own functions and settings (early
stopping on a grouped validation split of the training part), and converts
with model_conv.py's converter. Prints the table and writes it as markdown.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import artifacts  # noqa: E402
import evaluation  # noqa: E402
import features  # noqa: E402
import make_dataset_16k  # noqa: E402
import model_conv  # noqa: E402
import settings  # noqa: E402
import train_16k  # noqa: E402
from tflite_model import TFLiteModel  # noqa: E402

# (row name, feature preset, train_16k overrides)
ROWS = [
    ("seed as written (NR, STFT mean, MLP, no augmentation)", "seed", {"augment": False}),
    ("logmel stats + MLP, no augmentation", "logmel", {"augment": False}),
    ("logmel stats + MLP + augmentation", "logmel", {}),
    ("logmel patch + CNN + augmentation", "logmel_patch", {"model": "cnn"}),
]
SOURCE_COLUMN = "source_repo_or_package"
FOLDS = 5
SEED = 42


def train_settings(**overrides):
    """train_16k.py's defaults, as its main() would see them, plus overrides."""
    cfg = settings.parse_settings(vars(train_16k), [])
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def load_clips(data_dir, manifest):
    """(path, label, group, source) for every clip."""
    if not manifest:
        clips, _ = make_dataset_16k.clips_from_folder(data_dir)
        return [(p, lab, g, "") for p, lab, g in clips]
    sources = {}
    with open(manifest, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            sources[str(Path(manifest).parent / row["path"])] = row.get(SOURCE_COLUMN, "")
    clips, _ = make_dataset_16k.clips_from_manifest(manifest)
    return [(p, lab, g, sources.get(p, "")) for p, lab, g in clips]


def preset_data(clips, preset):
    """Features of every clip with one preset, as load_dataset would return."""
    config = features.feature_config(preset)
    results, _ = make_dataset_16k.extract_all([c[0] for c in clips], config, jobs=-1)
    sample = [c[0] for c in clips[:60]]
    features.extract_or_reason(sample[0], config)  # first call pays imports; not timed
    start = time.perf_counter()
    for path in sample:
        features.extract_or_reason(path, config)
    ms_per_clip = 1000 * (time.perf_counter() - start) / len(sample)
    return results, config, ms_per_clip


def evaluate_split(data, train, test, cfg):
    """Train on ``train`` (with a grouped validation split), predict ``test``
    with Keras and with the int8 model. Returns predictions and int8 info."""
    labels, groups = data["labels"], np.asarray(data["groups"])
    inner_train, inner_val = train_16k.grouped_split(labels[train], groups[train],
                                                     cfg.val_fraction, cfg.seed)
    model, _, scaling = train_16k.fit(data, train[inner_train], train[inner_val], cfg,
                                      progress_desc="")
    meta = {"input_standardisation": scaling}
    x_train = artifacts.model_inputs(data["features"][train], meta)
    x_test = artifacts.model_inputs(data["features"][test], meta)
    float_pred = train_16k.predict_classes(model, x_test)
    rng = np.random.default_rng(SEED)
    blob = model_conv.convert(model, x_train[rng.permutation(len(x_train))[:200]], int8=True)
    int8_pred = TFLiteModel(blob).predict_proba(x_test).argmax(axis=1)
    return float_pred, int8_pred, len(blob), model.count_params()


def measure_row(data, cfg, sources):
    from sklearn.model_selection import StratifiedGroupKFold
    labels, groups = data["labels"], np.asarray(data["groups"])
    names = data["label_names"]
    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    f1 = {"float": [], "int8": []}
    pooled = {"float": np.zeros(len(labels), int), "int8": np.zeros(len(labels), int)}
    for train, test in folds.split(labels, labels, groups):
        float_pred, int8_pred, size, params = evaluate_split(data, train, test, cfg)
        for kind, pred in (("float", float_pred), ("int8", int8_pred)):
            f1[kind].append(evaluation.classification_metrics(labels[test], pred, names)["macro_f1"])
            pooled[kind][test] = pred
    row = {"cv_" + k: (float(np.mean(v)), float(np.std(v))) for k, v in f1.items()}
    row["per_class"] = {k: evaluation.classification_metrics(labels, pooled[k], names)["per_class"]
                        for k in pooled}
    row["int8_kb"], row["params"] = size / 1024, params
    sources = np.asarray(sources)
    if len(set(sources)) > 1:
        loso = {"float": np.zeros(len(labels), int), "int8": np.zeros(len(labels), int)}
        for source in sorted(set(sources)):
            test = np.flatnonzero(sources == source)
            train = np.flatnonzero(sources != source)
            float_pred, int8_pred, _, _ = evaluate_split(data, train, test, cfg)
            loso["float"][test], loso["int8"][test] = float_pred, int8_pred
        for kind in loso:
            row["loso_" + kind] = evaluation.classification_metrics(labels, loso[kind],
                                                                    names)["macro_f1"]
    return row


def markdown(rows, names, n_clips, n_sources):
    head = ("| preset + model | CV macro-F1 float | CV macro-F1 int8 | LOSO macro-F1 float "
            "| LOSO int8 | per-class F1 (CV, float) | feature ms/clip | int8 KB | params |")
    lines = [head, "|" + "---|" * 9]
    for name, r in rows:
        per_class = ", ".join(f"{k} {r['per_class']['float'][k]['f1']:.2f}" for k in names)
        loso = (f"{r['loso_float']:.3f} | {r['loso_int8']:.3f}" if "loso_float" in r
                else "n/a | n/a")
        lines.append(f"| {name} | {r['cv_float'][0]:.3f} ± {r['cv_float'][1]:.3f} | "
                     f"{r['cv_int8'][0]:.3f} ± {r['cv_int8'][1]:.3f} | {loso} | {per_class} | "
                     f"{r['feature_ms']:.1f} | {r['int8_kb']:.0f} | {r['params']:,} |")
    lines.append(f"\n{n_clips} clips; grouped stratified {FOLDS}-fold CV"
                 + (f"; leave-one-source-out over {n_sources} sources" if n_sources > 1 else ""))
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--manifest", default=None)
    parser.add_argument("--out", default="reports/accuracy.md")
    parser.add_argument("--rows", default="", help="comma-separated row numbers (default all)")
    opts = parser.parse_args()
    artifacts.import_tensorflow().config.experimental.enable_op_determinism()
    clips = load_clips(opts.data_dir, opts.manifest)
    chosen = [ROWS[int(i)] for i in opts.rows.split(",")] if opts.rows else ROWS
    extracted = {}
    for preset in sorted({r[1] for r in chosen}):
        extracted[preset] = preset_data(clips, preset)
    usable = [i for i in range(len(clips)) if all(r[0][i][0] is not None
                                                  for r in extracted.values())]
    names = sorted({clips[i][1] for i in usable})
    results = []
    started = time.perf_counter()
    for name, preset, overrides in chosen:
        rows, config, ms = extracted[preset]
        data = {"features": np.stack([rows[i][0] for i in usable]),
                "labels": np.array([names.index(clips[i][1]) for i in usable]),
                "label_names": names, "paths": [clips[i][0] for i in usable],
                "groups": [clips[i][2] for i in usable], "feature_config": config}
        row = measure_row(data, train_settings(**overrides), [clips[i][3] for i in usable])
        row["feature_ms"] = ms
        results.append((name, row))
        print(f"[{time.perf_counter() - started:.0f} s] {name}: CV {row['cv_float'][0]:.3f}, "
              f"LOSO {row.get('loso_float', float('nan')):.3f}", flush=True)
    n_sources = len({clips[i][3] for i in usable})
    table = markdown(results, names, len(usable), n_sources)
    print("\n" + table)
    artifacts.write_text(opts.out, f"# Accuracy on {opts.data_dir}\n\n" + table)
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
