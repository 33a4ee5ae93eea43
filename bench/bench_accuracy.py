"""Measure every feature preset x model on the same folds, float and int8.

    python bench/bench_accuracy.py DATA_DIR [--manifest=CSV] [--out=reports/accuracy.md] [--rows=0,3]

- Grouped, stratified 5-fold cross-validation (the same folds for every row):
  macro-F1 mean +/- std over folds, and per-class F1 of the pooled predictions.
- Leave-one-source-out, when the manifest has a source column
  (``source``, or ``source_repo_or_package`` as in dev16k): train on every source but one,
  predict the one left out; the predictions of all left-out sources are
  pooled into one macro-F1.
- Cost: feature extraction ms per clip (one process), int8 size, parameters.

Every row trains with train_16k.py's own functions and settings (early
stopping on a grouped validation split of the training part), and converts
with model_conv.py's converter. Prints the table and writes it as markdown.
"""

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import features  # noqa: E402
from pipeline import clip_decisions, conversion, training  # noqa: E402
from pipeline.errors import run_script  # noqa: E402
from pipeline import clips, evaluation, extraction, files, settings, splits  # noqa: E402
from pipeline.quiet import configure_tensorflow  # noqa: E402
from pipeline.tflite_model import TFLiteModel  # noqa: E402

MANIFEST = None                # CSV with path,label,group[,source]: groups and LOSO sources
OUT = "reports/accuracy.md"    # the table, as markdown
ROWS = ""                      # comma-separated row numbers of CANDIDATES (default all)
FOLDS = 5                      # grouped, stratified cross-validation folds (0: LOSO only)
LOSO = True                    # also leave one source out (when the manifest has sources)
SEED = 42                      # folds, calibration clips and training
INT8 = True                    # also convert every fold's model to int8 (off: float only, faster)
IR_DIR = None                  # microphone impulse responses (WAV folder) for the DIR rows
CACHE_DIR = "reports/cache"    # features' augmented copies, computed once per setting
JOBS = -1                      # folds trained side by side, one process each (-1 = one per core)
SOURCES = ""                   # LOSO: hold out only the sources whose names contain one of these
                               # (comma-separated; a cheap screen, e.g. the water sources)
TRAIN = ""                     # train_16k settings added to every row, ";"-separated, e.g.
                               # "class_weights=false;cnn_filters=16,48,64" (a search without new rows)

# (row name, feature preset, train_16k overrides)
CANDIDATES = [
    ("the seed's method, literally (--recipe=seed: NR, STFT mean, MLP, whole clips)", "seed",
     {"recipe": "seed"}),
    ("logmel stats + MLP, no augmentation", "logmel", {"augment": False}),
    ("logmel stats + MLP + augmentation", "logmel", {}),
    ("logmel patch + CNN + augmentation, patience 30 (the previous default)", "logmel_patch",
     {"architecture": "cnn", "patience": 30}),
    ("logmel patch + CNN (batch norm) + augmentation with band EQ and masks", "logmel_patch",
     {"architecture": "cnn", "batch_norm": True, "spec_augment": True}),
    ("logmel patch + CNN + augmentation (the default before logmel_stream)", "logmel_patch",
     {"architecture": "cnn"}),
    ("default + DIR (microphone responses, p 0.7)", "logmel_patch",
     {"architecture": "cnn", "ir_dir": "IR_DIR"}),
    ("default + Freq-MixStyle (p 0.7)", "logmel_patch", {"architecture": "cnn", "freq_mixstyle": 0.7}),
    ("default + synthetic rooms (p 0.5)", "logmel_patch",
     {"architecture": "cnn", "room_probability": 0.5}),
    ("default + mixup (alpha 0.3)", "logmel_patch", {"architecture": "cnn", "mixup": 0.3}),
    ("default + DIR + Freq-MixStyle", "logmel_patch",
     {"architecture": "cnn", "ir_dir": "IR_DIR", "freq_mixstyle": 0.7}),
    ("default + DIR + synthetic rooms", "logmel_patch",
     {"architecture": "cnn", "ir_dir": "IR_DIR", "room_probability": 0.5}),
    ("default + per-band mean normalisation", "logmel_patch", {"architecture": "cnn", "band_norm": 1.0}),
    ("default + per-band mean normalisation + DIR", "logmel_patch",
     {"architecture": "cnn", "band_norm": 1.0, "ir_dir": "IR_DIR"}),
    ("default + distillation from a wider CNN (32,64,64)", "logmel_patch",
     {"architecture": "cnn", "teacher_filters": "32,64,64"}),
    ("wider student CNN (16,48,64; TFLM arena as the default's)", "logmel_patch",
     {"architecture": "cnn", "cnn_filters": "16,48,64"}),
    ("logmel stream + CNN + augmentation (the default)",
     "logmel_stream", {"architecture": "cnn"}),
    ("default, background mixed in only from 'other' clips", "logmel_patch",
     {"architecture": "cnn", "mix_classes": "other"}),
]


def train_flags(text):
    """"key=value;key=value" (--train) -> train_16k command-line flags."""
    return settings.key_value_flags(text, "--train")


def train_settings(seed, *, cache, ir_folder=None, flags=(), **overrides):
    """train_16k.py's defaults, as its main() would see them with ``flags``,
    plus overrides; ``cache`` stands for the dataset file (augmented copies
    are cached beside it) and the value "IR_DIR" of an override becomes
    ``ir_folder``."""
    cfg = settings.stage_settings(ROOT / "train_16k.py", [f"--seed={seed}", *flags])
    cfg.dataset = str(cache)
    for key, value in overrides.items():
        if value == "IR_DIR":
            if not ir_folder:
                raise SystemExit("this row convolves with microphone responses: pass "
                                 "--ir_dir=FOLDER (e.g. ../shared/datasets/mic_irs)")
            value = ir_folder
        setattr(cfg, key, value)
    return cfg


def preset_data(found, preset):
    """Features of every clip with one preset, and ms per clip in one process."""
    config = features.feature_config(preset)
    results, _ = extraction.extract_all([c.path for c in found], config, jobs=-1)
    sample = [c.path for c in found[:60]]
    features.extract_or_reason(sample[0], config)  # first call pays imports; not timed
    start = time.perf_counter()
    for path in sample:
        features.extract_or_reason(path, config)
    ms_per_clip = 1000 * (time.perf_counter() - start) / len(sample)
    return results, config, ms_per_clip


def clip_dataset(found, rows, config, *, usable, names):
    """The dataset train_16k.py's functions take: the ``usable`` clips of
    ``found`` (:func:`pipeline.clips.list_clips`) with their feature ``rows``
    (:func:`preset_data`), classes numbered in the order of ``names``."""
    return {"features": np.stack([rows[i].vector for i in usable]),
            "labels": np.array([names.index(found[i].label) for i in usable]),
            "label_names": names, "paths": [found[i].path for i in usable],
            "groups": [found[i].group for i in usable],
            "sources": [found[i].source for i in usable], "feature_config": config}


def evaluate_split(data, split, cfg, *, seed, pool, int8, windows=None):
    """Train on ``train`` (early stopping and open-set rule on ``val``;
    augmented copies from ``pool``; every window with EVERY_PATCH), decide
    ``test`` as predict.py would, with Keras, with the int8 model when
    ``int8``, and with Keras without the open-set rule (the plain argmax);
    given ``windows``, also by the mean of each clip's windows
    ("float_windows", as predict.py decides clips longer than a window).
    Returns {kind: decisions}, int8 size (0 without int8) and parameters."""
    train, val = training.recipe_split(cfg, split.train, split.validation)
    test = split.test
    started = time.perf_counter()
    model, history, scaling = training.fit(data, train, val, cfg, pool=pool, windows=windows,
                                            progress_desc="")
    rule = clip_decisions.fit_open_set(model, data, val, scaling=scaling, cfg=cfg, windows=windows)
    trained = time.perf_counter()
    decide = clip_decisions.predict_rows
    decisions = {"float": decide(model, data, test, scaling=scaling, rule=rule),
                 "float_argmax": decide(model, data, test, scaling=scaling)}
    if windows is not None:
        decisions["float_windows"] = decide(model, data, test, scaling=scaling, rule=rule,
                                            windows=windows)
    size = 0
    if int8:  # as model_conv.py converts it, and decided as predict.py decides
        conv = settings.stage_settings(ROOT / "model_conv.py")
        meta = {"open_set": rule, "input_standardisation": scaling,
                "labels": data["label_names"]}
        decide_int8, inputs_of = conversion.clip_decider(meta, data, windows)
        blob, _ = conversion.best_int8(model, train, val, inputs_of=inputs_of,
                                       decide=decide_int8, n_clips=conv.representative_clips,
                                       tries=conv.calibration_tries, seed=seed)
        decisions["int8"] = decide_int8(TFLiteModel(blob).predict_proba, test)[1]
        size = len(blob)
    timing = (f"train {trained - started:.0f} s ({len(history['loss'])} epochs), "
              f"int8 {time.perf_counter() - trained:.0f} s")
    return decisions, size, model.count_params(), timing


def measure_plan(data, cfg, plan, *, seed, pool, int8, jobs, only=(), windows=None):
    """train_16k.py's own splits and summaries for ``plan`` (k folds or
    "source"; with ``only``, the held-out sources whose names contain one of
    those words), float and int8. Returns {kind: summary}, int8 KB, params."""
    planned = list(splits.evaluation_splits(data, plan, val_fraction=cfg.val_fraction, seed=seed))
    chosen = splits.chosen_sources([p.name for p in planned], only)
    planned = [p for p in planned if p.name in chosen]
    kinds = ("int8", "float_argmax") if int8 else ("float_argmax",)
    kinds += ("float_windows",) if windows is not None else ()
    pooled = {kind: np.zeros(len(data["labels"]), int) for kind in kinds}
    cost = {}

    def run_split(k, split):
        return evaluate_split(data, split, cfg, seed=seed, pool=pool, int8=int8, windows=windows)

    pooled["float"] = np.zeros(len(data["labels"]), int)
    for split, (decisions, size, params, timing) in zip(
            planned, splits.run_splits(planned, run_split, jobs=jobs)):
        for kind in pooled:
            pooled[kind][split.test] = decisions[kind]
        cost["kb"], cost["params"] = size / 1024, params
        f1 = evaluation.classification_metrics(data["labels"][split.test], decisions["float"],
                                               data["label_names"])["macro_f1"]
        print(f"  {split.name}: macro-F1 {f1:.3f} ({timing})", flush=True)
    summaries = {kind: splits.summarise_splits(data, plan, planned, p) for kind, p in pooled.items()}
    tested = np.concatenate([test for *_, test in planned])
    if int8:  # int8 decides as predict.py does: by windows when there are windows
        same = pooled["float_windows" if windows is not None else "float"]
        summaries["int8"]["agreement_with_float"] = float(np.mean(pooled["int8"][tested]
                                                                  == same[tested]))
    return summaries, cost["kb"], cost["params"]


def measure_row(data, cfg, *, n_folds, seed, loso=True, int8=True, jobs=-1, only=()):
    """CV (and LOSO when asked and there are sources) macro-F1, float and
    (when asked) int8; with ``n_folds`` 0, LOSO only. The clips' augmented
    copies are made (or read from the cache) once for all splits."""
    row = {}
    started = time.perf_counter()
    pool = training.augmentation_pool(data, cfg)
    windows = training.clip_windows(data, cfg)
    row["augment_s"] = time.perf_counter() - started
    plan_args = dict(seed=seed, pool=pool, int8=int8, jobs=jobs, windows=windows)
    if n_folds:
        started = time.perf_counter()
        cv, row["int8_kb"], row["params"] = measure_plan(data, cfg, n_folds, **plan_args)
        row["cv_s"] = time.perf_counter() - started
        row.update({"cv_" + k: (v["macro_f1"]["mean"], v["macro_f1"]["std"])
                    for k, v in cv.items()})
        row["per_class"] = {k: v["pooled"]["per_class"] for k, v in cv.items()}
        if int8:
            row["cv_agreement"] = cv["int8"]["agreement_with_float"]
    if loso and len(set(data["sources"])) > 1:
        started = time.perf_counter()
        by_source, row["int8_kb"], row["params"] = measure_plan(data, cfg, "source",
                                                                only=only, **plan_args)
        row["loso_s"] = time.perf_counter() - started
        if not n_folds:
            row["per_class"] = {k: v["pooled"]["per_class"] for k, v in by_source.items()}
        if int8:
            row["loso_agreement"] = by_source["int8"]["agreement_with_float"]
        for kind, summary in by_source.items():
            row["loso_" + kind] = summary["pooled"]["macro_f1"]
        row["per_source"] = {f["name"]: f["macro_f1"] for f in by_source["float"]["folds"]}
        if "float_windows" in by_source:
            row["per_source_windows"] = {f["name"]: f["macro_f1"]
                                         for f in by_source["float_windows"]["folds"]}
        print(splits.folds_text(by_source["float"]), end="")
    return row


def markdown(rows, names, *, n_clips, n_sources, n_folds):
    head = ("| preset + model | CV macro-F1 float | CV macro-F1 int8 | LOSO macro-F1 float "
            "| LOSO int8 | LOSO float, argmax (no open-set rule) | per-class F1 (float) "
            "| feature ms/clip | int8 KB | params |")
    lines = [head, "|" + "---|" * 10]

    def cell(r, key):
        return f"{r[key][0]:.3f} ± {r[key][1]:.3f}" if key in r else "n/a"

    for name, r in rows:
        per_class = ", ".join(f"{k} {r['per_class']['float'][k]['f1']:.2f}" for k in names)
        loso = (f"{r['loso_float']:.3f} | {r.get('loso_int8', float('nan')):.3f} | "
                f"{r['loso_float_argmax']:.3f}" if "loso_float" in r else "n/a | n/a | n/a")
        size = f"{r['int8_kb']:.0f}" if r.get("int8_kb") else "n/a"
        lines.append(f"| {name} | {cell(r, 'cv_float')} | {cell(r, 'cv_int8')} | {loso} | "
                     f"{per_class} | {r['feature_ms']:.1f} | {size} | {r['params']:,} |")
    lines.append(f"\n{n_clips} clips" + (f"; grouped stratified {n_folds}-fold CV" if n_folds
                                          else "")
                 + (f"; leave-one-source-out over {n_sources} sources" if n_sources > 1 else "")
                 + "; per-class F1 from the pooled " + ("CV" if n_folds else "LOSO")
                 + " predictions")
    for name, r in rows:
        if "loso_float_windows" in r or "cv_float_windows" in r:
            lines.append(f"\n{name}, clips decided by the mean of their windows (as predict.py"
                         f" decides clips longer than a window): CV {cell(r, 'cv_float_windows')},"
                         f" LOSO {r.get('loso_float_windows', float('nan')):.3f}")
    with_sources = [(name, r) for name, r in rows if "per_source" in r]
    if with_sources:
        sources = sorted(with_sources[0][1]["per_source"])
        lines += ["", "Macro-F1 (float) on each source when it is left out (over the classes "
                  "that source has):", "",
                  "| preset + model | " + " | ".join(sources) + " |",
                  "|" + "---|" * (len(sources) + 1)]
        lines += [f"| {name} | " + " | ".join(f"{r['per_source'][s]:.2f}" for s in sources)
                  + " |" for name, r in with_sources]
    return "\n".join(lines) + "\n"


def main():
    parser = settings.parser_from_constants(globals())
    parser.add_argument("data_dir", help="DATA_DIR/<class>/*.wav (or the manifest's folder)")
    cfg = settings.parse_settings(globals(), parser=parser)
    configure_tensorflow()  # deterministic (fold workers configure their own)
    found, _ = clips.list_clips(cfg.data_dir, cfg.manifest)
    chosen = [CANDIDATES[i] for i in settings.parse_list(cfg.rows, int, "rows")] or CANDIDATES
    extracted = {preset: preset_data(found, preset) for preset in sorted({r[1] for r in chosen})}
    usable = [i for i in range(len(found))
              if all(r[0][i].vector is not None for r in extracted.values())]
    names = sorted({found[i].label for i in usable})
    flags = train_flags(cfg.train)
    results = []
    started = time.perf_counter()
    for name, preset, overrides in chosen:
        rows, config, ms = extracted[preset]
        data = clip_dataset(found, rows, config, usable=usable, names=names)
        cache = Path(cfg.cache_dir) / f"{preset}.npz"
        name += "".join(f", {flag[2:]}" for flag in flags)
        row = measure_row(data, train_settings(cfg.seed, cache=cache, ir_folder=cfg.ir_dir,
                                               flags=flags, **overrides),
                          n_folds=cfg.folds, seed=cfg.seed, loso=cfg.loso, int8=cfg.int8,
                          jobs=cfg.jobs, only=settings.parse_list(cfg.sources, str, "sources"))
        row["feature_ms"] = ms
        results.append((name, row))
        print(f"[{time.perf_counter() - started:.0f} s] {name}: CV "
              f"{row.get('cv_float', (float('nan'),))[0]:.3f} (int8 "
              f"{row.get('cv_int8', (float('nan'),))[0]:.3f}, agreement "
              f"{row.get('cv_agreement', float('nan')):.3f}), LOSO "
              f"{row.get('loso_float', float('nan')):.3f} (int8 "
              f"{row.get('loso_int8', float('nan')):.3f}, agreement "
              f"{row.get('loso_agreement', float('nan')):.3f})"
              + (f"; deciding clips by their windows: CV "
                 f"{row.get('cv_float_windows', (float('nan'),))[0]:.3f}, LOSO "
                 f"{row.get('loso_float_windows', float('nan')):.3f}"
                 if "per_class" in row and "float_windows" in row["per_class"] else ""),
              flush=True)
    n_sources = len({found[i].source for i in usable}) if cfg.loso else 0
    table = markdown(results, names, n_clips=len(usable), n_sources=n_sources,
                     n_folds=cfg.folds)
    print("\n" + table)
    files.write_text(cfg.out, f"# Accuracy on {cfg.data_dir}\n\n" + table)
    files.write_json(Path(cfg.out).with_suffix(".json"),
                     {"seed": cfg.seed, "clips": len(usable), "rows": dict(results)})
    print(f"wrote {cfg.out} and its figures as JSON")


if __name__ == "__main__":
    run_script(main)  # a PipelineError is one line, not a traceback
