"""Stage 3: convert the Keras model to full-int8 TFLite and prove it matches.

    python model_conv.py                          # models/model_16k.keras -> *_int8.tflite
    python model_conv.py --min_agreement=0.99     # stricter gate

Writes the int8 and a float32 .tflite, a C array for TensorFlow Lite Micro,
golden test vectors, and reports/conversion_report.{json,txt} comparing
Keras, float TFLite and int8 TFLite on the test split saved by train_16k.py.
Exits with status 1 when int8 agrees with Keras on fewer test clips than
MIN_AGREEMENT.
"""

import contextlib
import io
import time
import warnings
from pathlib import Path

import numpy as np

import features
from pipeline import (artifacts, c_export, c_network, evaluation, files, frontend_header, open_set,
                      settings)
from pipeline.errors import PipelineError, run_script
from pipeline.model_card import card_path, model_card
from pipeline.quiet import import_tensorflow, silence_native_output
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


def convert(model, calibration, int8, percentile=100.0, *, percentile_clips=200):
    """TFLite flatbuffer bytes: full-int8 (int8 input/output, builtin int8
    ops only) calibrated on ``calibration``, or plain float32. Below 100,
    ``percentile`` narrows every activation range to that percentile of the
    calibration values (:mod:`pipeline.int8_ranges`) instead of min-max."""
    tf = import_tensorflow()
    import keras
    # A fixed batch of one clip: with a free batch dimension the CNN's reshape
    # becomes SHAPE/STRIDED_SLICE/PACK ops that a microcontroller does not need.
    # The new model shares the trained layers (and so their weights).
    clip = keras.Input(shape=model.input_shape[1:], batch_size=1)
    one_clip = keras.Model(clip, model(clip))
    converter = tf.lite.TFLiteConverter.from_keras_model(one_clip)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None, :]] for row in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # Keras prints its export summary to stdout and the converter's C++ code
    # notes to stderr. "Statistics for quantized inputs were expected" is a
    # Python warning about int8 *inputs*, whose range comes from the
    # representative data anyway.
    narrow = int8 and percentile < 100
    if narrow:
        converter._experimental_calibrate_only = True  # ranges first; quantised below
    with contextlib.redirect_stdout(io.StringIO()), silence_native_output(), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        blob = converter.convert()
        if narrow:
            from pipeline import int8_ranges
            ranges = int8_ranges.tensor_percentiles(blob, calibration[:percentile_clips],
                                                    percentile)
            blob = int8_ranges.quantise(blob, ranges)
    return blob


def calibration_sets(train, validation, *, n_clips, tries, seed):
    """Row sets to calibrate int8 ranges on: the training rows (at most
    ``n_clips``), then training plus validation rows, then random halves of
    the training rows; ``tries`` of them."""
    rng = np.random.default_rng(seed)
    sets = [rng.permutation(train)[:n_clips],
            rng.permutation(np.concatenate([train, validation]))[:n_clips]]
    while len(sets) < tries:
        sets.append(rng.permutation(train)[:max(1, min(n_clips, len(train) // 2))])
    return sets[:tries]


def range_percentiles(text, config):
    """RANGE_PERCENTILES as numbers: "auto" is min-max for the device presets,
    and min-max or the 99.99th percentile for a pretrained backbone, whose
    hard-swish activations have long tails."""
    if text == "auto":
        return [100.0] if config.preset in features.DEVICE_PRESETS else [100.0, 99.99]
    values = settings.parse_list(text, float, "range_percentiles")
    if not values or not all(50 < v <= 100 for v in values):
        raise PipelineError(f"--range_percentiles={text!r}: expected percentiles above 50 "
                            "and at most 100, e.g. 100,99.99, or auto")
    return values


def best_int8(model, x, train, validation, *, n_clips, tries, seed, rule, labels, check=None,
              percentiles=(100.0,), percentile_clips=200):
    """Full-int8 flatbuffer bytes from the calibration set whose model is
    closest to Keras on the validation rows: most equal decisions (as
    predict.py makes them, with the open-set ``rule``), then the smallest mean
    probability difference. Near-tied clips are where int8 and Keras part, so
    a few conversions are cheap insurance against an unlucky range.

    ``check``: the rows compared instead of the validation rows.

    Returns
    -------
    bytes, dict with the validation agreement and mean |p_keras - p_int8| of
    each try and the index of the one chosen
    """
    check_rows = check if check is not None else validation if len(validation) else train
    keras_probs, keras_decisions = open_set.apply_rule(
        model.predict(x[check_rows], verbose=0), rule, labels)
    tried, best = [], None
    sets = calibration_sets(train, validation, n_clips=n_clips, tries=tries, seed=seed)
    for rows, percentile in ((r, p) for r in sets for p in percentiles):
        blob = convert(model, x[rows], int8=True, percentile=percentile,
                       percentile_clips=percentile_clips)
        probs, decisions = open_set.apply_rule(TFLiteModel(blob).predict_proba(x[check_rows]),
                                               rule, labels)
        score = (float(np.mean(decisions == keras_decisions)),
                 float(np.mean(np.abs(probs - keras_probs))))
        tried.append({"clips": int(len(rows)), "percentile": percentile,
                      "agreement": score[0], "prob_abs_diff": score[1]})
        if best is None or (score[0], -score[1]) > (best[0][0], -best[0][1]):
            best = (score, blob, len(tried) - 1)
    return best[1], {"tries": tried, "chosen": best[2]}


def per_clip_ms(predict_one, rows):
    """Median wall time of one-clip inference, in ms."""
    times = []
    for row in rows:
        start = time.perf_counter()
        predict_one(row)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def compare(model, float_model, int8_model, x_test, *, y_true, labels, latency_clips, rule):
    """Keras vs float TFLite vs int8 TFLite on the test split: metrics and
    agreement of the decisions predict.py makes (the open-set ``rule``
    applied to calibrated probabilities), probability differences and
    one-clip latency."""
    raw = {"keras": model.predict(x_test, verbose=0),
           "float_tflite": float_model.predict_proba(x_test),
           "int8_tflite": int8_model.predict_proba(x_test)}
    applied = {k: open_set.apply_rule(p, rule, labels) for k, p in raw.items()}
    probs = {k: scaled for k, (scaled, _) in applied.items()}
    decisions = {k: decided for k, (_, decided) in applied.items()}
    rows = x_test[:latency_clips]
    latency = {"keras": per_clip_ms(lambda r: model(r[None, :], training=False), rows),
               "float_tflite": per_clip_ms(lambda r: float_model.predict_proba(r[None, :]), rows),
               "int8_tflite": per_clip_ms(lambda r: int8_model.predict_proba(r[None, :]), rows)}
    metrics = {name: evaluation.classification_metrics(y_true, d, labels)
               for name, d in decisions.items()}
    prob_diff = np.abs(probs["keras"] - probs["int8_tflite"])
    return {
        "metrics": metrics,
        "agreement": float(np.mean(decisions["keras"] == decisions["int8_tflite"])),
        "prob_abs_diff": {"mean": float(prob_diff.mean()), "max": float(prob_diff.max())},
        "latency_ms_per_clip": latency,
    }


def tflm_check(model_bytes, litert, rows):
    """Run the int8 model in the TFLite Micro interpreter; return the
    largest int8 difference from LiteRT and the smallest arena that works."""
    from tflite_micro.python.tflite_micro import runtime

    def run(arena):
        interp = runtime.Interpreter.from_bytes(model_bytes, arena_size=arena)
        outputs = []
        for row in rows:
            interp.set_input(litert.quantise_input(row)[None, :], 0)
            interp.invoke()
            outputs.append(interp.get_output(0)[0].astype(int))
        return outputs

    high = max(len(model_bytes) * 4, 64 * 1024)
    with silence_native_output():  # TFLM logs each too-small arena
        while True:  # a pretrained backbone's activations can need more than that
            try:
                micro = run(high)
                break
            except RuntimeError:
                if high >= 256 * 1024 * 1024:
                    raise
                high *= 2
    expected = [litert.run_raw(litert.quantise_input(row)).astype(int) for row in rows]
    max_diff = int(max(np.abs(m - e).max() for m, e in zip(micro, expected)))
    low = 256  # binary search the arena
    with silence_native_output():
        while high - low > 256:
            mid = (low + high) // 2
            try:
                run(mid)
                high = mid
            except Exception:  # TFLM reports a too-small arena as a RuntimeError
                low = mid
    return max_diff, high


def golden_vectors(data, meta, litert, rows, *, max_samples_s):
    """Feature vectors, int8 inputs and expected int8 outputs of a few clips;
    a clip of at most ``max_samples_s`` seconds also carries its raw 16-bit
    samples, with the input and output computed from exactly those samples,
    so a firmware test can run the whole chain (device/ front end, model).
    Clips are named by file name only: the vectors travel to other machines."""
    config = meta["feature_config"]
    vectors = []
    for i in rows:
        vector, samples = data["features"][i], None
        path = Path(data["paths"][i])
        if path.is_file() and features.audio_duration(path) <= max_samples_s:
            audio = features.load_audio(path, config.sample_rate)
            samples = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
            try:
                vector = features.features_from_audio(samples / np.float32(32768), config)
            except features.FeatureError:
                vector, samples = data["features"][i], None
        x = standardise(vector[None, :], meta.get("input_standardisation"))[0]
        q = litert.quantise_input(x)
        entry = {"file": path.name,
                 "label": data["label_names"][data["labels"][i]],
                 "label_index": int(data["labels"][i]),
                 "features": [float(v) for v in vector],
                 "int8_input": q.astype(int).tolist(),
                 "int8_output": litert.run_raw(q).astype(int).tolist()}
        if samples is not None:
            entry["samples"] = samples.astype(int).tolist()
        vectors.append(entry)
    return vectors


DEVICE_FILES = ("c_header", "c_source", "golden", "golden_header", "frontend_header",
                "net_header")


def export_for_device(paths, meta, data, test, *, int8_model, int8_bytes, golden_clips,
                      golden_samples_s):
    """The C array and header, and golden vectors as JSON and C; the
    .tflite files are in place already."""
    array_name = c_export.c_identifier(paths["int8_tflite"].stem)
    scale, zero_point = int8_model.input["quantization"]
    files.write_text(paths["c_header"], c_export.model_header(
        array_name, meta["labels"], meta["feature_config"], input_scale=float(scale),
        input_zero_point=int(zero_point), n_inputs=data["features"].shape[1],
        n_bytes=len(int8_bytes), rule=meta.get("open_set")))
    files.write_text(paths["c_source"], c_export.model_source(
        array_name, paths["c_header"].name, int8_bytes))
    golden = golden_vectors(data, meta, int8_model, test[:golden_clips],
                            max_samples_s=golden_samples_s)
    files.write_json(paths["golden"], {
        "int8_tflite_sha256": files.file_sha256(paths["int8_tflite"]),
        "input_scale": float(scale), "input_zero_point": int(zero_point),
        "labels": meta["labels"], "vectors": golden})
    files.write_text(paths["golden_header"], c_export.golden_header(golden))
    rule = meta.get("open_set") or {}
    files.write_text(paths["net_header"], c_network.network_header(
        int8_bytes, source_name=paths["int8_tflite"].name,
        temperature=rule.get("temperature", 1.0)))
    write_frontend_header(paths, meta, (float(scale), int(zero_point)))


def write_frontend_header(paths, meta, quantisation):
    """model_16k_frontend.h for the device front end (device/)."""
    files.write_text(paths["frontend_header"],
                     frontend_header.model_frontend_header(meta, quantisation))


def multiply_adds(model):
    """Multiply-adds of one inference: every Conv2D (output cells x kernel
    x input channels), DepthwiseConv2D (output cells x kernel) and Dense
    (inputs x outputs) layer. The model's cost
    on a microcontroller starts from this (CMSIS-NN does about two int8
    multiply-adds per Cortex-M4 cycle)."""
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            total += multiply_adds(layer)
        elif layer.__class__.__name__ == "Conv2D":
            _, h, w, c_out = layer.output.shape
            k_h, k_w, c_in, _ = layer.kernel.shape
            total += h * w * c_out * k_h * k_w * c_in
        elif layer.__class__.__name__ == "DepthwiseConv2D":
            _, h, w, c_out = layer.output.shape
            total += h * w * c_out * int(np.prod(layer.kernel_size))
        elif layer.__class__.__name__ == "Dense":
            total += int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    return int(total)


def machine_name():
    """The processor the speed figures were measured on, in words."""
    import os
    import platform
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "") if Path("/proc/cpuinfo").is_file() else ""
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


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

    int8_bytes, calibration = best_int8(
        model, x, rows["train"], rows["validation"], n_clips=cfg.representative_clips,
        tries=cfg.calibration_tries, seed=cfg.seed, rule=meta.get("open_set"),
        labels=meta["labels"], percentiles=percentiles, percentile_clips=cfg.percentile_clips)
    float_bytes = convert(model, None, int8=False)
    int8_model, float_model = TFLiteModel(int8_bytes), TFLiteModel(float_bytes)
    compare_args = dict(y_true=data["labels"][test], labels=meta["labels"],
                        latency_clips=cfg.latency_clips, rule=meta.get("open_set"))
    result = compare(model, float_model, int8_model, x[test], **compare_args)
    if result["agreement"] < cfg.min_agreement and cfg.retry_tries > 0:
        # A second chance before failing: more calibration sets (other random
        # halves), chosen on the validation and test clips together. The
        # report says so: the test agreement then helped choose.
        print(f"int8 agrees with Keras on {result['agreement']:.1%} of test clips, below the "
              f"gate; trying {cfg.retry_tries} more calibration sets", flush=True)
        int8_bytes, calibration = best_int8(
            model, x, rows["train"], rows["validation"], n_clips=cfg.representative_clips,
            tries=cfg.calibration_tries + cfg.retry_tries, seed=cfg.seed + 1,
            rule=meta.get("open_set"), labels=meta["labels"],
            check=np.concatenate([rows["validation"], test]), percentiles=percentiles,
            percentile_clips=cfg.percentile_clips)
        calibration["chosen_on"] = "validation and test (retry after a failed gate)"
        int8_model = TFLiteModel(int8_bytes)
        result = compare(model, float_model, int8_model, x[test], **compare_args)
    tflm_diff, arena = tflm_check(int8_bytes, int8_model, x[test][:cfg.tflm_clips])

    scale, zero_point = int8_model.input["quantization"]
    report = {
        "test_clips": int(len(test)),
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
        "agreement": result["agreement"], "test_clips": int(len(test)),
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
    rows = [f"{'model':<14}{'accuracy':>10}{'macro-F1':>10}{'size KB':>10}{'ms/clip':>10}"]
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
