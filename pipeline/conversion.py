"""Conversion, as model_conv.py runs it: full-int8 TFLite calibrated on a
few row sets (min-max or percentile activation ranges), the one closest to
Keras kept; Keras vs float vs int8 on the test split; TFLite Micro's
output and arena; the model's multiply-adds."""

import contextlib
import io
import time
import warnings
from pathlib import Path

import numpy as np

import features
from pipeline import evaluation, open_set, settings
from pipeline.errors import PipelineError
from pipeline.quiet import import_tensorflow, silence_native_output
from pipeline.tflite_model import TFLiteModel


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
