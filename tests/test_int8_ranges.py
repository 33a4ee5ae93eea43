"""Int8 activation ranges at a percentile (pipeline/int8_ranges.py)."""

import numpy as np

from pipeline import conversion
from pipeline import int8_ranges
from pipeline.tflite_model import TFLiteModel


def small_model():
    import keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(8,))
    hidden = keras.layers.Dense(16, activation="hard_silu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))


def activation_scales(blob):
    """Scale of every int8 activation tensor (one row: no weights), in order."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=blob)
    return [t["quantization"][0] for t in interpreter.get_tensor_details()
            if t["dtype"] == np.int8 and t["shape"][0] == 1 and t["quantization"][0] > 0]


def test_a_percentile_narrows_ranges_and_keeps_the_answers():
    model = small_model()
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (300, 8)).astype(np.float32)
    x[0] *= 40  # one outlier stretches min-max ranges
    minmax = conversion.convert(model, x, int8=True)
    narrow = conversion.convert(model, x, int8=True, percentile=99.0)
    wide, tight = activation_scales(minmax), activation_scales(narrow)
    assert len(wide) == len(tight) >= 4
    assert all(t <= w + 1e-12 for t, w in zip(tight, wide))
    assert sum(t < 0.7 * w for t, w in zip(tight, wide)) >= 2  # the outlier no longer sets them
    keras_pred = model.predict(x[1:], verbose=0).argmax(axis=1)
    assert np.mean(TFLiteModel(narrow).predict_proba(x[1:]).argmax(axis=1) == keras_pred) > 0.9


def test_narrowing_never_widens_a_range():
    model = small_model()
    x = np.random.default_rng(2).normal(0, 1, (50, 8)).astype(np.float32)
    import tensorflow as tf
    import keras
    clip = keras.Input(shape=(8,), batch_size=1)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(clip, model(clip)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([r[None]] for r in x)
    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    huge = {i: (-1e9, 1e9) for i in range(200)}
    assert int8_ranges.narrowed(calibrated, huge) == int8_ranges.narrowed(calibrated, {})
