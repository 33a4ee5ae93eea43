"""A float TFLite model rebuilt as a Keras model with the same weights.

The pretrained tier trains a head on a pretrained AudioSet tagger and
converts the whole network to full int8 with model_conv.py; that needs the
tagger as Keras layers, not as a flatbuffer. This module reads the
flatbuffer (the schema that ai-edge-litert ships) and maps each operator to
one built-in Keras layer, so the result is an ordinary functional model:
saved and loaded in Keras' safe mode, trainable, and converted by
TFLiteConverter like any other. Operators it does not know are refused by
name; nothing from the file is executed.

Known operators: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, PAD (spatial
zeros), MEAN (over height and width), ADD, MUL (two tensors, or one tensor
and a scalar), HARD_SWISH, LOGISTIC, RELU, RELU6, TRANSPOSE (batch first),
RESHAPE: what EfficientAT's exported MobileNetV3 (mn04_as) is made of.
"""

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

_ACTIVATIONS = {0: None, 1: "relu", 3: "relu6"}  # TFLite fused activation -> Keras
_PADDINGS = {0: "same", 1: "valid"}


def _schema():
    from ai_edge_litert import schema_py_generated
    return schema_py_generated


def read_graph(path):
    """The operators, tensors and signature of a TFLite file.

    Returns
    -------
    dict with ``ops`` (list of (name, inputs, outputs, options)), ``tensors``
    (list of (shape, constant array or None)), ``inputs`` and ``outputs``
    (signature name -> tensor index)
    """
    schema = _schema()
    path = Path(path)
    try:
        model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
        graph = model.subgraphs[0]
    except Exception as err:  # flatbuffers raises whatever a bad offset gives
        raise PipelineError(f"{path}: not a TFLite model ({type(err).__name__})") from None
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    tensors = []
    for tensor in graph.tensors:
        data = model.buffers[tensor.buffer].data
        value = None
        if data is not None and len(data):
            kind = types[tensor.type]
            if kind not in ("FLOAT32", "INT32", "INT64"):
                raise PipelineError(f"{path}: a {kind} constant; only float models can be "
                                    "rebuilt in Keras")
            value = np.frombuffer(bytes(data), dtype=kind.lower()).reshape(tensor.shape)
        tensors.append((tuple(int(d) for d in tensor.shape), value))
    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        options = vars(op.builtinOptions) if op.builtinOptions is not None else {}
        ops.append((name, [int(t) for t in op.inputs], [int(t) for t in op.outputs], options))
    signature = (model.signatureDefs or [None])[0]
    if signature is None:
        inputs = {f"input_{k}": int(t) for k, t in enumerate(graph.inputs)}
        outputs = {f"output_{k}": int(t) for k, t in enumerate(graph.outputs)}
    else:
        inputs = {s.name.decode(): int(s.tensorIndex) for s in signature.inputs}
        outputs = {s.name.decode(): int(s.tensorIndex) for s in signature.outputs}
    return {"ops": ops, "tensors": tensors, "inputs": inputs, "outputs": outputs}


def keras_model(path, input_shape, *, name="backbone"):
    """The float TFLite model at ``path`` as a Keras functional model.

    Parameters
    ----------
    path : str or Path
        A float32 TFLite file with one input (any batch size).
    input_shape : tuple of int
        The input's shape without the batch dimension (dynamic sizes of the
        file, such as the number of frames, are fixed to these).
    name : str

    Returns
    -------
    keras.Model with one input and a dict of outputs named as the file's
    signature (e.g. ``logits``, ``embedding``).
    """
    from pipeline.quiet import import_keras
    keras = import_keras()
    graph = read_graph(path)
    if len(graph["inputs"]) != 1:
        raise PipelineError(f"{path}: expected one input, found {len(graph['inputs'])}")
    (input_name, input_index), = graph["inputs"].items()
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    values = {input_index: inputs}
    for k, (op, ins, outs, options) in enumerate(graph["ops"]):
        try:
            values[outs[0]] = _layer(keras, op, ins, options, tensors=graph["tensors"],
                                     values=values, name=f"{name}_{k}_{op.lower()}")
        except KeyError:
            raise PipelineError(f"{path}: operator {k} ({op}) reads a tensor that nothing "
                                "computed (a graph with several subgraphs?)") from None
    outputs = {key: values[index] for key, index in graph["outputs"].items()}
    return keras.Model(inputs, outputs, name=name)


def _constant(tensors, index, what):
    value = tensors[index][1]
    if value is None:
        raise PipelineError(f"expected a constant {what}")
    return value


def _layer(keras, op, ins, options, *, tensors, values, name):
    """One operator applied to its Keras inputs; returns the output tensor."""
    L = keras.layers
    x = values.get(ins[0]) if tensors[ins[0]][1] is None else None
    activation = _ACTIVATIONS.get(options.get("fusedActivationFunction", 0), "?")
    if activation == "?":
        raise PipelineError(f"{op}: fused activation {options['fusedActivationFunction']} "
                            "is not supported")
    if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        kernel = _constant(tensors, ins[1], f"{op} kernel")
        bias = _constant(tensors, ins[2], f"{op} bias") if len(ins) > 2 and ins[2] >= 0 else None
        if (options.get("dilationHFactor", 1), options.get("dilationWFactor", 1)) != (1, 1):
            raise PipelineError(f"{op}: dilated convolutions are not supported")
        common = dict(strides=(options["strideH"], options["strideW"]),
                      padding=_PADDINGS[options["padding"]], activation=activation,
                      use_bias=bias is not None, name=name)
        if op == "CONV_2D":  # TFLite OHWI -> Keras HWIO
            layer = L.Conv2D(kernel.shape[0], kernel.shape[1:3], **common)
            weights = [kernel.transpose(1, 2, 3, 0)]
        else:  # TFLite (1, H, W, C * multiplier) -> Keras (H, W, C, multiplier)
            channels = values[ins[0]].shape[-1]
            multiplier = kernel.shape[-1] // channels
            layer = L.DepthwiseConv2D(kernel.shape[1:3], depth_multiplier=multiplier, **common)
            weights = [kernel.reshape(*kernel.shape[1:3], channels, multiplier)]
        out = layer(x)
        layer.set_weights(weights + ([bias] if bias is not None else []))
        return out
    if op == "FULLY_CONNECTED":
        kernel = _constant(tensors, ins[1], "FULLY_CONNECTED weights")
        bias = _constant(tensors, ins[2], "bias") if len(ins) > 2 and ins[2] >= 0 else None
        if len(x.shape) != 2:
            raise PipelineError("FULLY_CONNECTED on a tensor of more than 2 dimensions")
        layer = L.Dense(kernel.shape[0], activation=activation, use_bias=bias is not None,
                        name=name)
        out = layer(x)
        layer.set_weights([kernel.T] + ([bias] if bias is not None else []))
        return out
    if op == "PAD":
        pads = _constant(tensors, ins[1], "PAD widths")
        if len(pads) != 4 or pads[0].any() or pads[3].any():
            raise PipelineError("PAD: only height and width of a 4-D tensor can be padded")
        return L.ZeroPadding2D(tuple(map(tuple, pads[1:3].tolist())), name=name)(x)
    if op == "MEAN":
        axes = sorted(int(a) % 4 for a in np.ravel(_constant(tensors, ins[1], "MEAN axes")))
        if axes != [1, 2] or len(x.shape) != 4:
            raise PipelineError(f"MEAN over axes {axes}: only height and width are supported")
        return L.GlobalAveragePooling2D(keepdims=bool(options.get("keepDims")), name=name)(x)
    if op in ("ADD", "MUL"):
        constants = [tensors[i][1] for i in ins]
        if all(c is None for c in constants):
            merge = L.Add if op == "ADD" else L.Multiply
            out = merge(name=name)([values[ins[0]], values[ins[1]]])
        else:
            tensor = values[ins[0] if constants[0] is None else ins[1]]
            scalar = next(c for c in constants if c is not None)
            if scalar.size != 1:
                raise PipelineError(f"{op} with a constant tensor: only scalars are supported")
            scalar = float(scalar.ravel()[0])
            out = (L.Rescaling(1.0, offset=scalar, name=name) if op == "ADD"
                   else L.Rescaling(scalar, name=name))(tensor)
        return L.Activation(activation, name=f"{name}_act")(out) if activation else out
    simple = {"HARD_SWISH": "hard_silu", "LOGISTIC": "sigmoid", "RELU": "relu",
              "RELU6": "relu6"}
    if op in simple:
        return L.Activation(simple[op], name=name)(x)
    if op == "TRANSPOSE":
        perm = [int(p) for p in _constant(tensors, ins[1], "TRANSPOSE permutation")]
        if perm[0] != 0:
            raise PipelineError("TRANSPOSE that moves the batch dimension")
        return L.Permute(perm[1:], name=name)(x)
    if op == "RESHAPE":
        shape = (_constant(tensors, ins[1], "RESHAPE shape") if len(ins) > 1
                 else np.asarray(options["newShape"]))
        shape = [int(s) for s in np.ravel(shape)]
        if shape[0] not in (-1, 1):
            raise PipelineError("RESHAPE that changes the batch dimension")
        return L.Reshape(tuple(shape[1:]), name=name)(x)
    raise PipelineError(f"operator {op} is not supported (supported: CONV_2D, "
                        "DEPTHWISE_CONV_2D, FULLY_CONNECTED, PAD, MEAN, ADD, MUL, HARD_SWISH, "
                        "LOGISTIC, RELU, RELU6, TRANSPOSE, RESHAPE)")
