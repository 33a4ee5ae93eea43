"""What calibrate.py decides and stores: the threshold that meets a false
activation target, and the choice written into the model's metadata and
device header."""

import math
from pathlib import Path

from pipeline import artifacts, files


def best_threshold(rows, target):
    """The row with the highest recall among those within ``target`` false
    activations per hour (then the fewest false activations, then the
    highest threshold: the safest of equals); else the one with the fewest
    false activations. Returns (row, met)."""
    within = [r for r in rows if r["false_per_hour"] <= target and not math.isnan(r["recall"])]
    if within:
        return max(within, key=lambda r: (r["recall"], -r["false_per_hour"], r["threshold"])), True
    return min(rows, key=lambda r: (r["false_per_hour"], -r["recall"])), False


def store(model_file, calibration):
    """The choice in the model metadata, and the device header regenerated
    with it: the header first, then the metadata (with the header's new
    checksum) last, so predict.py and the device agree, and a run killed
    between the two leaves a header that the metadata does not vouch for."""
    from pipeline.frontend_header import model_frontend_header
    paths = artifacts.model_paths(Path(model_file).parent)
    raw = files.read_json(paths["meta"], "model metadata", "python train_16k.py")
    raw["calibration"] = calibration
    meta = artifacts.load_model_metadata(paths["meta"].parent)
    meta["calibration"] = calibration
    # Calibrated for other windows than the model's (--window_s, --hop_s):
    # the model listens with those from now on, so the choice applies.
    for store_in in (raw, meta):
        store_in["events"] = dict(store_in["events"], window_s=calibration["window_s"],
                                  hop_s=calibration["hop_s"])
    if paths["frontend_header"].is_file() and "conversion" in raw:
        quantisation = raw["conversion"].get("input_quantisation")
        if quantisation is None:
            from pipeline.tflite_model import TFLiteModel
            quantisation = TFLiteModel(paths["int8_tflite"]).input["quantization"]
        files.write_text(paths["frontend_header"], model_frontend_header(meta, quantisation))
        raw["conversion"]["sha256"]["frontend_header"] = files.file_sha256(
            paths["frontend_header"])
    if "conversion" in raw:  # the card's calibration section
        from pipeline.model_card import card_path, model_card
        files.write_text(card_path(paths["meta"].parent), model_card(raw))
    files.write_json(paths["meta"], raw)
