"""Keeping the terminal to what the user needs: TensorFlow's start-up log
lines and the notices native libraries print go nowhere.

Training runs on any Keras 3 backend (``KERAS_BACKEND``, TensorFlow unless
set; e.g. ``jax`` on a machine without TensorFlow, bench/bench_sweep.py);
conversion to int8 always needs TensorFlow."""

import contextlib
import os


def keras_backend():
    """The Keras backend this process trains with: ``KERAS_BACKEND``, else
    "tensorflow" (Keras' own default)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def import_keras():
    """Keras, with TensorFlow imported quietly first when it is the backend."""
    if keras_backend() == "tensorflow":
        import_tensorflow()
    import keras
    return keras


def import_tensorflow():
    """Import TensorFlow without its start-up log lines.

    TF_CPP_MIN_LOG_LEVEL hides the C++ notices (oneDNN, CUDA stubs) only when
    set before the first import; absl's Python logger and TensorFlow's own
    logger are set to errors only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with silence_native_output():  # CUDA stub notices written while loading the library
        import tensorflow as tf
    import absl.logging
    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")  # e.g. retracing notes during cross-validation
    return tf


def configure_tensorflow(*, threads=None, deterministic=True):
    """TensorFlow as training needs it: deterministic ops (same seed, same
    model) and, in a worker process that shares the machine with others,
    ``threads`` threads. Thread counts can only be set before TensorFlow
    runs its first op; later calls keep what is set. Nothing (None) when
    Keras trains on another backend."""
    if keras_backend() != "tensorflow":
        return None
    tf = import_tensorflow()
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process
            pass
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return tf


@contextlib.contextmanager
def silence_native_output(fd=2):
    """Send what C/C++ code writes to ``fd`` (stderr by default) to /dev/null,
    e.g. TFLite Micro's messages while probing arena sizes."""
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
