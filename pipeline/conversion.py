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
from pipeline import clip_decisions, evaluation, open_set, settings
from pipeline.errors import PipelineError
from pipeline.quiet import import_tensorflow, silence_native_output
from pipeline.standardisation import standardise
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


def best_int8(model, train, validation, *, inputs_of, decide, n_clips, tries, seed, check=None,
              percentiles=(100.0,), percentile_clips=200, reference=False):
    """Full-int8 flatbuffer bytes from the calibration set whose model is
    closest to Keras on the validation clips: most equal decisions (as
    predict.py makes them: ``decide``), then the smallest mean probability
    difference. Near-tied clips are where int8 and Keras part, so a few
    conversions are cheap insurance against an unlucky range.

    Parameters
    ----------
    model : keras.Model
    train, validation : np.ndarray of int
        Dataset rows (clips).
    inputs_of : callable
        Clip rows -> the model inputs predict.py feeds for them (their
        windows' rows, standardised), shape (n, n_inputs); calibration data.
    decide : callable
        ``decide(predict, rows)`` -> (probabilities, decisions) of those
        clips, with ``predict`` (model inputs -> probabilities).
    check : np.ndarray of int, optional
        The clips compared instead of the validation clips.
    reference : bool
        Run the int8 model with LiteRT's reference kernels (TFLite Micro's
        integers: how predict.py runs a device model).

    Returns
    -------
    bytes, dict with the validation agreement and mean |p_keras - p_int8| of
    each try and the index of the one chosen
    """
    check_rows = check if check is not None else validation if len(validation) else train
    keras_probs, keras_decisions = decide(lambda x: model.predict(x, verbose=0), check_rows)
    tried, best = [], None
    sets = calibration_sets(train, validation, n_clips=n_clips, tries=tries, seed=seed)
    for rows, percentile in ((r, p) for r in sets for p in percentiles):
        inputs = inputs_of(rows)
        if len(inputs) > n_clips:  # windows: as many rows as clips, spread over all of them
            inputs = inputs[np.linspace(0, len(inputs) - 1, n_clips).astype(int)]
        blob = convert(model, inputs, int8=True, percentile=percentile,
                       percentile_clips=percentile_clips)
        probs, decisions = decide(TFLiteModel(blob, reference=reference).predict_proba,
                                  check_rows)
        score = (float(np.mean(decisions == keras_decisions)),
                 float(np.mean(np.abs(probs - keras_probs))))
        tried.append({"clips": int(len(rows)), "rows": int(len(inputs)),
                      "percentile": percentile, "agreement": score[0],
                      "prob_abs_diff": score[1]})
        if best is None or (score[0], -score[1]) > (best[0][0], -best[0][1]):
            best = (score, blob, len(tried) - 1)
    return best[1], {"tries": tried, "chosen": best[2]}


def per_clip_ms(predict_one, rows):
    """Median wall time of one-row inference, in ms."""
    times = []
    for row in rows:
        start = time.perf_counter()
        predict_one(row)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def compare(model, float_model, int8_model, test, *, decide, y_true, labels, latency_rows):
    """Keras vs float TFLite vs int8 TFLite on the test clips, each decided
    as predict.py decides (``decide``, see :func:`best_int8`): metrics,
    agreement of the decisions, probability differences, and the latency of
    one model input (``latency_rows``: a window, or a clip)."""
    predicts = {"keras": lambda x: model.predict(x, verbose=0),
                "float_tflite": float_model.predict_proba,
                "int8_tflite": int8_model.predict_proba}
    decided = {k: decide(predict, test) for k, predict in predicts.items()}
    probs = {k: p for k, (p, _) in decided.items()}
    decisions = {k: d for k, (_, d) in decided.items()}
    latency = {"keras": per_clip_ms(lambda r: model(r[None, :], training=False), latency_rows),
               "float_tflite": per_clip_ms(lambda r: float_model.predict_proba(r[None, :]),
                                           latency_rows),
               "int8_tflite": per_clip_ms(lambda r: int8_model.predict_proba(r[None, :]),
                                          latency_rows)}
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


def clip_views(meta, data, *, dataset, jobs=-1):
    """How predict.py sees each clip of ``data`` with this model: its
    windows (:func:`pipeline.views.all_windows`, cached beside ``dataset``)
    or None, and that in words for the report. None for a model that decides
    whole clips (the seed's recipe), and when the clips' audio is not there
    to cut windows from (then each clip's dataset row stands in)."""
    if meta.get("decides_clips_by") == "whole_clip":
        return None, "each clip's whole-clip features (the seed's recipe), as predict.py"
    missing = [p for p in data["paths"] if not Path(p).is_file()]
    if missing:
        return None, (f"each clip's dataset row (loudest patch): {len(missing)} clip(s) not "
                      f"found, e.g. {missing[0]}, so not by their windows as predict.py")
    from pipeline import views
    events = meta["events"]
    windows = views.all_windows(data, window_s=events["window_s"], hop_s=events["hop_s"],
                                dataset=dataset, jobs=jobs)
    return windows, "the mean of each clip's windows, as predict.py"


def clip_decider(meta, data, windows):
    """``decide(predict, rows)`` and ``inputs_of(rows)`` for
    :func:`best_int8` and :func:`compare`: clips decided as predict.py
    decides them (each window calibrated by the open-set rule, then the
    mean, then the rule's decision), from ``windows`` (:func:`clip_views`)
    or the clips' dataset rows."""
    rule, scaling = meta.get("open_set"), meta.get("input_standardisation")

    def decide(predict, rows):
        probs = clip_decisions.clip_probabilities(predict, data, rows, scaling=scaling,
                                                  windows=windows, rule=rule)
        return probs, open_set.decide(probs, rule, meta["labels"])

    def inputs_of(rows):
        x = data["features"][rows] if windows is None else windows[0][np.isin(windows[1], rows)]
        return standardise(x, scaling)

    return decide, inputs_of
