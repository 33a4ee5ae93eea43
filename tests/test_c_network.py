"""pipeline/c_network.py: the int8 network as C arrays for the host tool.
(tests/test_device.py runs the C interpreter against TFLite Micro.)"""

import numpy as np
import pytest

from pipeline import conversion, networks
from pipeline import c_network


@pytest.mark.parametrize("real", [0.5, 0.75, 1.0, 3.7, 1e-3, 0.0931, 2.0 ** -20])
def test_quantize_multiplier_reconstructs_the_scale(real):
    multiplier, shift = c_network.quantize_multiplier(real)
    assert 2 ** 30 <= multiplier < 2 ** 31
    assert multiplier * 2.0 ** (shift - 31) == pytest.approx(real, rel=2 ** -30)


def test_quantize_multiplier_edges():
    assert c_network.quantize_multiplier(0.5) == (2 ** 30, 0)
    assert c_network.quantize_multiplier(1.0) == (2 ** 30, 1)
    assert c_network.quantize_multiplier(0.0) == (0, 0)
    assert c_network.quantize_multiplier(1e-12) == (0, 0)  # below 2^-31: TFLite's zero


def test_activation_ranges():
    assert c_network.activation_range("NONE", 0.1, 5) == (-128, 127)
    assert c_network.activation_range("RELU", 0.1, -20) == (-20, 127)
    assert c_network.activation_range("RELU6", 0.05, -128) == (-128, -8)


def int8_bytes(model, n_inputs):
    rows = np.random.default_rng(0).normal(size=(16, n_inputs)).astype(np.float32)
    return conversion.convert(model, rows, int8=True)


def test_cnn_and_mlp_layers_and_an_unsupported_operation():
    cnn = networks.build_model(30, 3, "cnn", [4], dropout=0.0, learning_rate=1e-3, seed=0,
                                input_shape=(6, 5))
    layers = c_network.network_layers(int8_bytes(cnn, 30))
    assert [layer["op"] for layer in layers] == ["CONV_2D", "MAX_POOL_2D", "MEAN",
                                                 "FULLY_CONNECTED", "SOFTMAX"]
    conv = layers[0]
    assert conv["in"] == [6, 5, 1] and conv["out"] == [6, 5, 4] and conv["pad"] == (1, 1)
    assert conv["weights"].size == 4 * 3 * 3 and len(conv["multiplier"]) == 4
    assert layers[1]["out"] == [3, 2, 4] and layers[-1]["out"] == [1, 1, 3]
    header = c_network.network_header(int8_bytes(cnn, 30), source_name="m.tflite")
    assert "MODEL_NET_LAYERS = 5" in header and "Temperature" not in header.split("//")[0]
    assert '#include "model_16k_int8.h"' in header  # the open-set rule in one header
    mlp = networks.build_model(10, 3, "mlp", [7], dropout=0.0, learning_rate=1e-3, seed=0)
    dense = c_network.network_layers(int8_bytes(mlp, 10))
    assert [layer["op"] for layer in dense] == ["FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"]
    assert dense[0]["act"][0] == dense[0]["out_zp"]  # the fused ReLU clamps at zero
    band = networks.build_model(30, 3, "cnn", [4], dropout=0.0, learning_rate=1e-3, seed=0,
                                 input_shape=(6, 5), band_norm=1.0)
    blob = conversion.convert(band, np.zeros((4, 30), np.float32) + 0.5, int8=True)
    with pytest.raises(c_network.UnsupportedNetwork, match="AVERAGE_POOL_2D|SUB"):
        c_network.network_layers(blob)
    header = c_network.network_header(blob, source_name="m.tflite")
    assert "#define MODEL_NET_UNSUPPORTED" in header
