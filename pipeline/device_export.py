"""The files a firmware needs from a converted model: the int8 model as a
C array and header, golden vectors (JSON and C), the network header of
device/'s int8 interpreter and the front-end header."""

from pathlib import Path

import numpy as np

import features
from pipeline import c_export, c_network, files, frontend_header
from pipeline.standardisation import standardise


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
    files.write_text(paths["net_header"], c_network.network_header(
        int8_bytes, source_name=paths["int8_tflite"].name))
    write_frontend_header(paths, meta, (float(scale), int(zero_point)))


def write_frontend_header(paths, meta, quantisation):
    """model_16k_frontend.h for the device front end (device/)."""
    files.write_text(paths["frontend_header"],
                     frontend_header.model_frontend_header(meta, quantisation))
