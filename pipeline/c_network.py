"""The int8 network of a .tflite model as C arrays (``model_16k_net.h``).

The host tool (device/tools/features_cli.c) classifies a live stream with
it: ``features --stream --events`` runs front end, network and events in
C, so a laptop or a Raspberry Pi can listen without Python. The small
interpreter (device/src/af_net.c) knows the operations our models use:
reshape, 2-D convolution, max pooling, mean over time and bands, fully
connected and softmax, with TensorFlow Lite's integer arithmetic (per-channel
requantisation by a 31-bit multiplier and a shift). On a board, TensorFlow
Lite Micro runs the .tflite itself; this header is not needed there.
"""

import math

import numpy as np

from pipeline import c_export

SUPPORTED = ("RESHAPE", "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED",
             "SOFTMAX")
_ACTIVATIONS = {0: "NONE", 1: "RELU", 3: "RELU6"}


class UnsupportedNetwork(ValueError):
    """The model uses an operation or option the host interpreter lacks."""


def quantize_multiplier(real):
    """TensorFlow Lite's QuantizeMultiplier: ``real`` as a Q31 multiplier
    and a power-of-two shift (real = multiplier * 2^(shift - 31)), rounding
    half away from zero as std::round does."""
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    q = math.floor(abs(fraction) * (1 << 31) + 0.5) * (1 if fraction > 0 else -1)
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(q), int(shift)


def activation_range(kind, scale, zero_point):
    """The int8 clamp of a fused activation, as TensorFlow Lite computes it."""
    def q(x):
        return zero_point + int(round(x / scale))
    low, high = -128, 127
    if kind in ("RELU", "RELU6"):
        low = max(low, q(0.0))
    if kind == "RELU6":
        high = min(high, q(6.0))
    return low, high


def _options(op, cls):
    table = op.BuiltinOptions()
    options = cls()
    options.Init(table.Bytes, table.Pos)
    return options


def _leading_padding(schema, padding, sizes, kernel, *, stride):
    """TFLite's leading padding of each dimension: none for VALID, half the
    total (rounded down) for SAME."""
    if padding != schema.Padding.SAME:
        return (0, 0)
    out = [(size + step - 1) // step for size, step in zip(sizes, stride)]
    return tuple(max((o - 1) * step + k - size, 0) // 2
                 for o, step, k, size in zip(out, stride, kernel, sizes))


def network_layers(model_bytes):
    """The layers of an int8 .tflite model, with weights and requantisation.

    Returns
    -------
    list of dict (op, shapes, zero points, arrays), in execution order

    Raises
    ------
    UnsupportedNetwork
        For an operation or option outside :data:`SUPPORTED`.
    """
    from ai_edge_litert import schema_py_generated as schema
    model = schema.Model.GetRootAsModel(model_bytes, 0)
    graph = model.Subgraphs(0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def tensor(i):
        t = graph.Tensors(i)
        q = t.Quantization()
        scales = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else np.ones(1)
        zeros = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else np.zeros(1)
        buffer = model.Buffers(t.Buffer())
        data = buffer.DataAsNumpy() if buffer.DataLength() else None
        types = {schema.TensorType.INT8: np.int8, schema.TensorType.INT32: np.int32}
        if data is not None:
            data = np.frombuffer(data.tobytes(), types.get(t.Type(), np.uint8))
        return {"shape": list(t.ShapeAsNumpy()), "scales": np.asarray(scales, np.float64),
                "zero_point": int(zeros[0]), "data": data, "type": t.Type()}

    layers = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if name not in SUPPORTED:
            raise UnsupportedNetwork(f"operation {name} (the host tool's interpreter knows "
                                     f"{', '.join(SUPPORTED)})")
        if name == "RESHAPE":
            continue
        inputs = [tensor(op.Inputs(j)) for j in range(op.InputsLength()) if op.Inputs(j) >= 0]
        out = tensor(op.Outputs(0))
        x = inputs[0]
        if x["type"] != schema.TensorType.INT8 or out["type"] != schema.TensorType.INT8:
            raise UnsupportedNetwork(f"{name} on tensors that are not int8")
        in_shape = ([1, 1, 1] + [int(v) for v in x["shape"][1:]])[-3:]
        out_shape = ([1, 1, 1] + [int(v) for v in out["shape"][1:]])[-3:]
        layer = {"op": name, "in": in_shape, "out": out_shape, "in_zp": x["zero_point"],
                 "out_zp": out["zero_point"], "in_scale": float(x["scales"][0]),
                 "out_scale": float(out["scales"][0]), "act": (-128, 127),
                 "stride": (1, 1), "kernel": (1, 1), "pad": (0, 0)}
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            options = _options(op, {"CONV_2D": schema.Conv2DOptions,
                                    "DEPTHWISE_CONV_2D": schema.DepthwiseConv2DOptions,
                                    "FULLY_CONNECTED": schema.FullyConnectedOptions}[name])
            act = _ACTIVATIONS.get(options.FusedActivationFunction())
            if act is None:
                raise UnsupportedNetwork(f"{name} with activation "
                                         f"{options.FusedActivationFunction()}")
            layer["act"] = activation_range(act, layer["out_scale"], layer["out_zp"])
            w = inputs[1]  # depthwise: (1, kh, kw, channels), else (filters, ...)
            filters = int(w["shape"][-1 if name == "DEPTHWISE_CONV_2D" else 0])
            scales = np.broadcast_to(w["scales"], (filters,))
            layer["weights"] = w["data"]
            layer["bias"] = (inputs[2]["data"] if len(inputs) > 2 and inputs[2]["data"] is not None
                             else np.zeros(filters, np.int32))
            pairs = [quantize_multiplier(layer["in_scale"] * float(s) / layer["out_scale"])
                     for s in scales]
            layer["multiplier"] = np.array([m for m, _ in pairs], np.int64)
            layer["shift"] = np.array([s for _, s in pairs], np.int64)
            if name == "DEPTHWISE_CONV_2D" and (options.DepthMultiplier() != 1
                                                or in_shape[2] != filters):
                raise UnsupportedNetwork("DEPTHWISE_CONV_2D with a depth multiplier")
            if name != "FULLY_CONNECTED":
                if options.DilationHFactor() != 1 or options.DilationWFactor() != 1:
                    raise UnsupportedNetwork(f"{name} with dilation")
                kh, kw = int(w["shape"][1]), int(w["shape"][2])
                layer["kernel"], layer["stride"] = (kh, kw), (options.StrideH(), options.StrideW())
                layer["pad"] = _leading_padding(schema, options.Padding(), in_shape[:2],
                                                (kh, kw), stride=layer["stride"])
        elif name == "MAX_POOL_2D":
            options = _options(op, schema.Pool2DOptions)
            layer["kernel"] = (options.FilterHeight(), options.FilterWidth())
            layer["stride"] = (options.StrideH(), options.StrideW())
            layer["pad"] = _leading_padding(schema, options.Padding(), in_shape[:2],
                                            layer["kernel"], stride=layer["stride"])
        elif name == "MEAN":
            axes = sorted(int(a) for a in inputs[1]["data"])
            if axes != [1, 2] or len(x["shape"]) != 4:
                raise UnsupportedNetwork(f"MEAN over axes {axes} (only over height and width)")
            cells = in_shape[0] * in_shape[1]  # the division is part of the multiplier
            m, s = quantize_multiplier(layer["in_scale"] / (cells * layer["out_scale"]))
            layer["multiplier"], layer["shift"] = np.array([m]), np.array([s])
        elif name == "SOFTMAX":
            if _options(op, schema.SoftmaxOptions).Beta() != 1.0:
                raise UnsupportedNetwork("SOFTMAX with beta other than 1")
        layers.append(layer)
    return layers


def _array(kind, name, values, per_row=16):
    values = [int(v) for v in values]
    rows = ",\n".join("    " + c_export.c_int_list(values[i:i + per_row])
                      for i in range(0, len(values), per_row))
    return f"static const {kind} {name}[{len(values)}] = {{\n{rows}}};\n"


def arena_bytes(layers):
    """The bytes af_net_arena_bytes computes for ``layers``: each step (a
    layer, or a convolution fused with the max pooling after it) writes at
    one end of the arena's tensor part while reading what the step before
    wrote at the other; the caller owns the input and the output. After it,
    4-byte aligned, the largest convolution's scratch: for CONV_2D its
    receptive field as int8 and two int16 columns (each kernel h x w x input
    channels, rounded up to 4), and for every convolution three int32 per
    output channel (two cells' accumulators and their maximum)."""
    sizes, k = [], 0
    while k < len(layers):
        if (k + 1 < len(layers) and layers[k]["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D")
                and layers[k + 1]["op"] == "MAX_POOL_2D" and tuple(layers[k + 1]["pad"]) == (0, 0)):
            k += 1  # the step's output is the pooling's
        if k < len(layers) - 1:
            sizes.append(int(np.prod(layers[k]["out"])))
        k += 1
    tensors = max([a + b for a, b in zip([0] + sizes, sizes)], default=0)
    scratch = [(5 * _round4(int(np.prod(layer["kernel"])) * layer["in"][2])
                if layer["op"] == "CONV_2D" else 0) + 12 * layer["out"][2]
               for layer in layers if layer["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    return _round4(tensors) + max(scratch, default=0)


def _round4(n):
    return (n + 3) // 4 * 4


def network_header(model_bytes, *, source_name):
    """``model_16k_net.h``: the network's layers for device/src/af_net.c
    (``af_model_net``), the arena it needs and the output's quantisation, or,
    for a model it cannot run, a header
    that says which operation (MODEL_NET_UNSUPPORTED). The open-set rule
    (kTemperature) stays in model_16k_int8.h, which it includes: one place."""
    guard = "MODEL_16K_NET_H_"
    head = (f"// Generated by model_conv.py from {source_name}: its int8 network as arrays,\n"
            "// for device/'s int8 interpreter (af_net.h: af_net_run(&af_model_net, ...), with an\n"
            "// arena of MODEL_NET_ARENA_BYTES), whose output equals TensorFlow Lite Micro's.\n"
            f"#ifndef {guard}\n#define {guard}\n\n#include \"af_net.h\"\n"
            "#include \"model_16k_int8.h\"  // kTemperature, the open-set rule: one place\n\n")
    try:
        layers = network_layers(model_bytes)
    except UnsupportedNetwork as err:
        return (head + f"#define MODEL_NET_UNSUPPORTED {c_export.c_string(str(err))}\n"
                "enum { MODEL_NET_LAYERS = 1, MODEL_NET_ARENA_BYTES = 1, MODEL_NET_INPUTS = 1,\n"
                "       MODEL_NET_OUTPUTS = 1, kOutputZeroPoint = 0 };\n"
                "static const float kOutputScale = 1.0f;\n"
                "static const af_net af_model_net = {NULL, 0};  // never run\n"
                f"\n#endif  // {guard}\n")
    arrays, entries = [], []
    for k, layer in enumerate(layers):
        refs = {}
        for key, kind in (("weights", "int8_t"), ("bias", "int32_t"),
                          ("multiplier", "int32_t"), ("shift", "int32_t")):
            if key in layer:
                refs[key] = f"net_{key}_{k}"
                arrays.append(_array(kind, refs[key], np.ravel(layer[key])))
        entries.append(
            f"    {{AF_NET_{layer['op']}, {{{', '.join(map(str, layer['in']))}}}, "
            f"{{{', '.join(map(str, layer['out']))}}}, {{{layer['kernel'][0]}, "
            f"{layer['kernel'][1]}}}, {{{layer['stride'][0]}, {layer['stride'][1]}}}, "
            f"{{{layer['pad'][0]}, {layer['pad'][1]}}}, {layer['in_zp']}, {layer['out_zp']}, "
            f"{layer['act'][0]}, {layer['act'][1]}, {layer['in_scale']!r}f, "
            f"{layer['out_scale']!r}f, {refs.get('weights', 'NULL')}, "
            f"{refs.get('bias', 'NULL')}, {refs.get('multiplier', 'NULL')}, "
            f"{refs.get('shift', 'NULL')}}},")
    arena = arena_bytes(layers)
    last = layers[-1]
    return (head + "".join(arrays)
            + "\n// MODEL_NET_ARENA_BYTES equals af_net_arena_bytes(&af_model_net).\n"
            f"enum {{ MODEL_NET_LAYERS = {len(layers)}, MODEL_NET_ARENA_BYTES = {arena},\n"
            f"       MODEL_NET_INPUTS = {int(np.prod(layers[0]['in']))}, "
            f"MODEL_NET_OUTPUTS = {int(np.prod(last['out']))} }};\n"
            f"// The output tensor's quantisation (what af_output_probabilities needs).\n"
            f"static const float kOutputScale = {last['out_scale']!r}f;\n"
            f"enum {{ kOutputZeroPoint = {last['out_zp']} }};\n"
            "static const af_net_layer model_net_layers[MODEL_NET_LAYERS] = {\n"
            + "\n".join(entries) + "\n};\n"
            "static const af_net af_model_net = {model_net_layers, MODEL_NET_LAYERS};\n"
            f"\n#endif  // {guard}\n")
