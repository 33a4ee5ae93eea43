"""Running a .tflite model with the LiteRT interpreter (no TensorFlow import).

Used by model_conv.py (to compare with Keras) and predict.py (to classify).
For an int8 model, float inputs are quantised and outputs dequantised with
the scale and zero point stored in the model itself.
"""

import numpy as np


class TFLiteModel:
    """A .tflite classifier with one input (1, n_features) and one output.

    Parameters
    ----------
    path : str, Path or bytes
        The .tflite file, or its contents.
    threads : int
        Interpreter threads; 1 keeps per-clip latency comparable.
    reference : bool
        LiteRT's reference kernels instead of its optimised ones: slower, but
        the same integers as TensorFlow Lite Micro on a device (the optimised
        kernels round differently, a step or two at the output).
    """

    def __init__(self, path, threads=1, *, reference=False):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from pipeline.errors import PipelineError
        from pipeline.quiet import silence_native_output
        source = ({"model_content": bytes(path)} if isinstance(path, (bytes, bytearray))
                  else {"model_path": str(path)})
        self.path = source.get("model_path", "<in-memory model>")
        try:
            with silence_native_output():  # LiteRT's "Created XNNPACK delegate" notice
                self.interpreter = Interpreter(
                    **source, num_threads=threads,
                    experimental_op_resolver_type=(OpResolverType.BUILTIN_REF if reference
                                                   else OpResolverType.AUTO))
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:  # LiteRT's words for a bad flatbuffer
            raise PipelineError(f"{self.path}: not a usable .tflite model ({str(err)[:200]}). "
                                "Run `python model_conv.py` again.") from None
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise PipelineError(f"{self.path}: expected a classifier with one input and one "
                                f"output, got {len(inputs)} and {len(outputs)}")
        self.input, self.output = inputs[0], outputs[0]
        self.input_shape = tuple(self.input["shape"])

    @property
    def is_int8(self):
        return self.input["dtype"] == np.int8

    def quantise_input(self, x):
        """Float model inputs -> what the input tensor takes (int8 or float32)."""
        x = np.asarray(x, dtype=np.float32)
        if not self.is_int8:
            return x
        scale, zero_point = self.input["quantization"]
        return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)

    def dequantise_output(self, q):
        if self.output["dtype"] != np.int8:
            return np.asarray(q, dtype=np.float32)
        scale, zero_point = self.output["quantization"]
        return (np.asarray(q, dtype=np.float32) - zero_point) * scale

    def run_raw(self, q_row):
        """One example in the input tensor's own type -> raw output row."""
        self.interpreter.set_tensor(self.input["index"], np.asarray(q_row)[None, ...])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[0].copy()

    def predict_proba(self, x):
        """Class probabilities for each row of float model inputs ``x``."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"{self.path}: model expects inputs of shape {self.input_shape[1:]}, "
                             f"got {x.shape[1:]}; were the features made with another "
                             "configuration?")
        quantised = self.quantise_input(x)
        return np.stack([self.dequantise_output(self.run_raw(row)) for row in quantised]) \
            if len(x) else np.zeros((0, self.output["shape"][-1]), np.float32)
