"""Stage 3: convert the Keras model to full-int8 TFLite and prove it matches.

    python model_conv.py                          # models/model_16k.keras -> *_int8.tflite
    python model_conv.py --min_agreement=0.99     # stricter gate

Writes the int8 and a float32 .tflite, a C array for TensorFlow Lite Micro,
golden test vectors, and reports/conversion_report.{json,txt} comparing
Keras, float TFLite and int8 TFLite on the test split saved by train_16k.py.
Exits with status 1 when int8 agrees with Keras on fewer test clips than
MIN_AGREEMENT.
"""

from pathlib import Path

import numpy as np

import features
from pipeline import artifacts, conversion, files, settings
from pipeline.conversion import (convert, machine_name, multiply_adds, range_percentiles,
                                 tflm_check)
from pipeline.device_export import DEVICE_FILES, export_for_device
from pipeline.errors import PipelineError, run_script
from pipeline.model_card import card_path, model_card
from pipeline.standardisation import standardise
from pipeline.tflite_model import TFLiteModel

DATASET = "data/dataset_16k.npz"  # dataset the model was trained on
MODEL_DIR = "models"           # where train_16k.py saved the model
REPORT_DIR = "reports"         # where the comparison reports go
REPRESENTATIVE_CLIPS = 1000    # training clips that calibrate int8 ranges (all, when fewer)
CALIBRATION_TRIES = 3          # calibration sets tried; the one closest to Keras on validation wins
RETRY_TRIES = 6                # when int8 fails the gate: this many more sets, chosen on validation + test
MIN_AGREEMENT = 0.98           # gate: share of test clips where int8 and Keras agree
GOLDEN_CLIPS = 5               # test clips saved as golden vectors for firmware
GOLDEN_SAMPLES_S = 2.0         # golden clips up to this long also carry their raw samples
TFLM_CLIPS = 5                 # test clips run through the TFLite Micro interpreter
LATENCY_CLIPS = 50             # test clips timed one at a time for the latency figures
RANGE_PERCENTILES = "auto"     # int8 activation ranges tried: percentiles of calibration values
                               # ("100": min-max; "auto": 100, and 99.99 too for a pretrained tier)
PERCENTILE_CLIPS = 200         # calibration rows whose values set a percentile range
SEED = 42                      # which training clips calibrate


def load_inputs(model_dir, dataset):
    """The model metadata, the dataset, the model inputs of every row, and
    the rows of the training and test splits the model was trained with.

    The dataset must carry the model's own feature configuration and labels.
    """
    meta = artifacts.load_model_metadata(model_dir)
    data = artifacts.load_dataset(dataset)
    retrain = "Pass the dataset the model was trained on, or retrain with `python train_16k.py`."
    if meta["labels"] != data["label_names"]:
        raise PipelineError(f"{dataset}: labels {data['label_names']} do not match the "
                            f"model's {meta['labels']}. {retrain}")
    if data["feature_config"] != meta["feature_config"]:
        changed = ", ".join(k for k, _, _ in meta["feature_config"].differences(
            data["feature_config"]))
        raise PipelineError(f"{dataset}: made with other feature settings than the model "
                            f"({changed}). {retrain}")
    row_of = {p: i for i, p in enumerate(data["paths"])}
    split = meta.get("split", {})
    missing = [p for p in split.get("test", []) + split.get("train", []) if p not in row_of]
    if missing or not split.get("test"):
        raise PipelineError(f"{dataset}: the model's saved split does not match this "
                            f"dataset ({len(missing)} clips missing). {retrain}")
    x = standardise(data["features"], meta.get("input_standardisation"))
    rows = {name: np.array([row_of[p] for p in split.get(name, [])], dtype=int)
            for name in ("train", "validation", "test")}
    return meta, data, x, rows


def model_state(paths):
    """Checksums of the Keras model and its metadata: what a conversion
    converted, compared again before it is recorded."""
    return {role: files.file_sha256(paths[role]) if paths[role].is_file() else None
            for role in ("keras", "meta")}


def record_conversion(paths, quantisation, figures, *, loaded):
    """Store the checksums of everything this run wrote in the model
    metadata, written last: predict.py then accepts exactly these files
    beside this metadata, so a run killed half-way never pairs a new .tflite
    with old metadata, or the reverse. ``loaded`` (:func:`model_state` when
    the run began) must still hold: metadata of a model trained meanwhile
    never vouches for files converted from the one before."""
    if model_state(paths) != loaded:
        raise PipelineError(f"{paths['meta'].parent}: the model changed while it was being "
                            "converted (train_16k.py ran meanwhile?); nothing was recorded. "
                            "Run `python model_conv.py` again.")
    raw = files.read_json(paths["meta"], "model metadata", "python train_16k.py")
    written = ("int8_tflite", "float_tflite", *DEVICE_FILES)
    raw["conversion"] = {"sha256": {key: files.file_sha256(paths[key]) for key in written
                                    if paths[key].is_file()},
                         "input_quantisation": [float(quantisation[0]), int(quantisation[1])],
                         "figures": figures}
    files.write_text(card_path(paths["meta"].parent), model_card(raw))
    files.write_json(paths["meta"], raw)


def save_reports(report_dir, report, metrics, labels):
    """conversion_report.json/.txt and the Keras vs int8 confusion matrices."""
    from pipeline import plots
    report_dir = Path(report_dir)
    files.write_json(report_dir / "conversion_report.json", report)
    table = report_table(report)
    files.write_text(report_dir / "conversion_report.txt", table)
    plots.confusion_matrices([("Keras", metrics["keras"]["confusion_matrix"]),
                              ("int8 TFLite", metrics["int8_tflite"]["confusion_matrix"])],
                             labels, report_dir / "confusion_keras_vs_int8.png")
    return table


def main(argv=None):
    cfg = settings.parse_settings(globals(), argv)
    settings.check_settings(cfg, representative_clips=settings.between(1, 10 ** 6),
                            calibration_tries=settings.between(1, 100),
                            retry_tries=settings.between(0, 100),
                            min_agreement=settings.between(0, 1),
                            golden_clips=settings.between(1, 1000),
                            golden_samples_s=settings.between(0, 60),
                            tflm_clips=settings.between(1, 1000),
                            latency_clips=settings.between(1, 10 ** 5),
                            percentile_clips=settings.between(1, 10 ** 5))
    paths = artifacts.model_paths(cfg.model_dir)
    loaded = model_state(paths)
    meta, data, x, rows = load_inputs(cfg.model_dir, cfg.dataset)
    test = rows["test"]
    model = artifacts.load_keras_model(paths["keras"], meta)
    files.check_writable("--model_dir", cfg.model_dir)
    files.check_writable("--report_dir", cfg.report_dir)
    percentiles = range_percentiles(cfg.range_percentiles, meta["feature_config"])

    # scored as predict.py runs it: a device model with TFLite Micro's integers
    device = meta["feature_config"].preset in features.DEVICE_PRESETS
    windows, decided_by = conversion.clip_views(meta, data, dataset=cfg.dataset)
    decide, inputs_of = conversion.clip_decider(meta, data, windows)
    int8_args = dict(inputs_of=inputs_of, decide=decide, n_clips=cfg.representative_clips,
                     percentiles=percentiles, percentile_clips=cfg.percentile_clips,
                     reference=device)
    int8_bytes, calibration = conversion.best_int8(
        model, rows["train"], rows["validation"], tries=cfg.calibration_tries, seed=cfg.seed,
        **int8_args)
    if not len(rows["validation"]):
        calibration["chosen_on"] = "training clips (no validation split: the seed's recipe)"
    float_bytes = convert(model, None, int8=False)
    int8_model = TFLiteModel(int8_bytes, reference=device)
    float_model = TFLiteModel(float_bytes)
    compare_args = dict(decide=decide, y_true=data["labels"][test], labels=meta["labels"],
                        latency_rows=x[test][:cfg.latency_clips])
    result = conversion.compare(model, float_model, int8_model, test, **compare_args)
    if result["agreement"] < cfg.min_agreement and cfg.retry_tries > 0:
        # A second chance before failing: more calibration sets (other random
        # halves), chosen on the validation and test clips together. The
        # report says so: the test agreement then helped choose.
        print(f"int8 agrees with Keras on {result['agreement']:.1%} of test clips, below the "
              f"gate; trying {cfg.retry_tries} more calibration sets", flush=True)
        int8_bytes, calibration = conversion.best_int8(
            model, rows["train"], rows["validation"], tries=cfg.calibration_tries +
            cfg.retry_tries, seed=cfg.seed + 1, check=np.concatenate([rows["validation"], test]),
            **int8_args)
        calibration["chosen_on"] = "validation and test (retry after a failed gate)"
        int8_model = TFLiteModel(int8_bytes, reference=device)
        result = conversion.compare(model, float_model, int8_model, test, **compare_args)
    tflm_diff, arena = tflm_check(int8_bytes, int8_model, x[test][:cfg.tflm_clips])

    scale, zero_point = int8_model.input["quantization"]
    report = {
        "test_clips": int(len(test)),
        "decided_by": decided_by,
        "metrics": {k: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
                    for k, m in result["metrics"].items()},
        "agreement_int8_vs_keras": result["agreement"],
        "prob_abs_diff": result["prob_abs_diff"],
        "file_bytes": {"keras": paths["keras"].stat().st_size,
                       "float_tflite": len(float_bytes), "int8_tflite": len(int8_bytes)},
        "latency_ms_per_clip": result["latency_ms_per_clip"],
        "parameters": int(model.count_params()),
        "flash_bytes": len(int8_bytes),
        "tflm": {"arena_bytes": arena, "max_int8_diff_vs_litert": tflm_diff,
                 "clips": int(min(cfg.tflm_clips, len(test)))},
        "input_quantisation": {"scale": float(scale), "zero_point": int(zero_point)},
        "calibration": calibration,
        "min_agreement": cfg.min_agreement,
    }
    print(save_reports(cfg.report_dir, report, result["metrics"], meta["labels"]), end="")
    if result["agreement"] < cfg.min_agreement:
        # Nothing is written to the model folder: predict.py must never run a
        # model that failed its own gate.
        print(f"error: int8 agrees with Keras on {result['agreement']:.1%} of test clips, below "
              f"--min_agreement={cfg.min_agreement:.2f}; no model file was written. Try more "
              "--calibration_tries, or inspect "
              f"{Path(cfg.report_dir) / 'confusion_keras_vs_int8.png'}", flush=True)
        return 1
    files.write_bytes(paths["int8_tflite"], int8_bytes)
    files.write_bytes(paths["float_tflite"], float_bytes)
    if meta["feature_config"].preset in features.DEVICE_PRESETS:
        export_for_device(paths, meta, data, test, int8_model=int8_model, int8_bytes=int8_bytes,
                          golden_clips=cfg.golden_clips, golden_samples_s=cfg.golden_samples_s)
    else:  # no C front end computes these features: no device files, and none left over
        for role in DEVICE_FILES:
            paths[role].unlink(missing_ok=True)
    record_conversion(paths, (scale, zero_point), {
        "agreement": result["agreement"], "test_clips": int(len(test)), "decided_by": decided_by,
        "int8_macro_f1": result["metrics"]["int8_tflite"]["macro_f1"],
        "keras_macro_f1": result["metrics"]["keras"]["macro_f1"],
        "int8_bytes": len(int8_bytes), "arena_bytes": arena,
        "parameters": int(model.count_params()), "multiply_adds": multiply_adds(model),
        "int8_ms_per_window": float(result["latency_ms_per_clip"]["int8_tflite"]),
        "machine": machine_name()}, loaded=loaded)
    device = f", {paths['c_source']}, {paths['golden']}" if paths["c_source"].is_file() else (
        " (no device files: no C front end computes these features)")
    print(f"wrote {paths['int8_tflite']}{device}")
    return 0


def report_table(report):
    """The conversion report as a readable table."""
    chosen = report["calibration"]["chosen"]
    rows = [f"test clips decided by {report.get('decided_by', 'their dataset rows')}",
            f"{'model':<14}{'accuracy':>10}{'macro-F1':>10}{'size KB':>10}{'ms/input':>10}"]
    for name in ("keras", "float_tflite", "int8_tflite"):
        m = report["metrics"][name]
        rows.append(f"{name:<14}{m['accuracy']:>10.3f}{m['macro_f1']:>10.3f}"
                    f"{report['file_bytes'][name] / 1024:>10.1f}"
                    f"{report['latency_ms_per_clip'][name]:>10.3f}")
    rows += [
        f"test clips: {report['test_clips']}",
        f"int8 vs Keras agreement: {report['agreement_int8_vs_keras']:.1%} "
        f"(gate {report['min_agreement']:.0%})",
        f"int8 calibration sets tried (agreement on "
        f"{report['calibration'].get('chosen_on', 'validation')}): " + ", ".join(
            f"{t['clips']} clips" + (f" at the {t['percentile']:g}th percentile"
                                     if t.get("percentile", 100) < 100 else "")
            + f" {t['agreement']:.1%}" + (" (chosen)" if k == chosen else "")
            for k, t in enumerate(report["calibration"]["tries"])),
        f"|p_keras - p_int8|: mean {report['prob_abs_diff']['mean']:.4f}, "
        f"max {report['prob_abs_diff']['max']:.4f}",
        f"parameters: {report['parameters']}, flash: {report['flash_bytes'] / 1024:.1f} KB, "
        f"TFLM arena: {report['tflm']['arena_bytes'] / 1024:.1f} KB "
        f"(TFLM vs LiteRT max int8 diff {report['tflm']['max_int8_diff_vs_litert']})",
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    run_script(main)
