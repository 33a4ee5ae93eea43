import json

import numpy as np
import pytest

import calibrate
import make_dataset_16k
import model_conv
import predict
import train_16k
from conftest import noise, tone, write
from pipeline import artifacts, calibration, event_settings, inference
from pipeline.errors import PipelineError


def choice(threshold, smooth_windows=1, min_event_s=0.5, window_s=2.0, hop_s=1.0):
    """A calibration as calibrate.py stores it, for the default window and hop."""
    import features
    return {"thresholds": {"alarm": threshold, "water": threshold},
            "smooth_windows": smooth_windows, "min_event_s": min_event_s,
            "window_s": window_s, "hop_s": hop_s, "feature_version": features.FEATURE_VERSION,
            "background": ["other"]}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small model whose "other" class is background: alarm = high tones,
    water = low-passed noise bursts, other = low hum."""
    tmp = tmp_path_factory.mktemp("calibrate")
    recipes = {"alarm": lambda i: tone(2500 + 120 * i, 1.5, seed=i),
               "water": lambda i: noise(1.5, seed=50 + i, low_hz=3000),
               "other": lambda i: tone(150 + 10 * i, 1.5, level=0.2, noise=0.02, seed=90 + i)}
    for label, make in recipes.items():
        for i in range(12):
            write(tmp / "clips" / label / f"{label}_{i}.wav", make(i))
    dataset = tmp / "ds.npz"
    make_dataset_16k.main([f"--data_dir={tmp / 'clips'}", f"--dataset={dataset}", "--jobs=1"])
    args = [f"--dataset={dataset}", f"--model_dir={tmp / 'models'}", f"--report_dir={tmp / 'r'}"]
    train_16k.main(args + ["--epochs=40", "--patience=10", "--augment=false"])
    model_conv.main(args + ["--min_agreement=0"])
    return tmp, dataset, tmp / "models" / "model_16k_int8.tflite"


def test_choice_is_the_best_recall_within_the_target():
    rows = [{"threshold": t, "recall": r, "false_per_hour": f, "events": 10, "delay_s": 0.1}
            for t, r, f in [(0.3, 1.0, 9.0), (0.5, 0.9, 2.0), (0.6, 0.8, 0.5), (0.7, 0.8, 0.5),
                            (0.9, 0.2, 0.0)]]
    row, met = calibration.best_threshold(rows, target=1.0)
    assert met and row["threshold"] == 0.7  # recall 0.8 within 1/h; the safer of two equals
    row, met = calibration.best_threshold(rows, target=0.0)
    assert met and row["threshold"] == 0.9
    row, met = calibration.best_threshold(rows[:2], target=1.0)
    assert not met and row["threshold"] == 0.5  # none meets it: fewest false activations


def test_calibration_meets_the_target_and_is_stored(model, tmp_path):
    tmp, dataset, tflite = model
    report = tmp_path / "reports"
    assert calibrate.main([f"--model={tflite}", f"--dataset={dataset}",
                           f"--data_dir={tmp / 'clips'}", "--stream_hours=0.1",
                           "--segment_s=120", "--snrs_db=10", "--event_gap_s=10",
                           "--target_fa_per_hour=20", f"--report_dir={report}",
                           "--store=force"]) == 0
    result = json.loads((report / "calibration.json").read_text())
    for label in ("alarm", "water"):
        chosen = result["per_class"][label]
        assert chosen["target_met"] and chosen["false_per_hour"] <= 20
        assert chosen["events"] > 0 and chosen["recall"] > 0.5
        assert (report / f"calibration_{label}.png").stat().st_size > 1000
    assert "too short to measure" in (report / "calibration.txt").read_text()
    meta = json.loads((tflite.parent / "model_16k.json").read_text())
    assert meta["calibration"]["thresholds"] == result["thresholds"]
    card = (tflite.parent / "MODEL_CARD.md").read_text()  # its calibration section, updated
    assert "Calibrated by calibrate.py for 20.0 false activation(s) per hour" in card
    assert f"alarm: threshold {result['thresholds']['alarm']}" in card
    header = (tflite.parent / "model_16k_frontend.h").read_text()
    assert f"{float(np.float32(result['thresholds']['alarm'])):.9e}f" in header


def test_stored_thresholds_change_predict_defaults(model, tmp_path):
    tmp, _, tflite = model
    recording = write(tmp_path / "rec.wav", np.concatenate(
        [tone(150, 4.0, level=0.2, noise=0.02), tone(2600, 4.0), tone(160, 4.0, level=0.2)]))

    def events_found(*args):
        out = tmp_path / "out.json"
        predict.main([f"--model={tflite}", str(recording), f"--json={out}", *args])
        return json.loads(out.read_text())["results"][0]["events"]

    calibration.store(tflite, choice(0.3))
    assert [e["class"] for e in events_found()] == ["alarm"]
    calibration.store(tflite, choice(1.0))
    assert events_found() == []                      # the stored thresholds rule by default
    assert [e["class"] for e in events_found("--threshold=0.3")] == ["alarm"]  # flag wins
    assert [e["class"] for e in events_found("--thresholds=alarm=0.3")] == ["alarm"]
    classifier = inference.Classifier(tflite)
    assert event_settings.event_settings(classifier.meta).thresholds["alarm"] == 1.0
    assert "1.000000000e+00f" in (tflite.parent / "model_16k_frontend.h").read_text()
    artifacts.check_belongs(tflite, artifacts.load_model_metadata(tflite.parent))


def test_calibration_without_background_clips_is_refused(model, tmp_path):
    tmp, dataset, tflite = model
    only_events = tmp_path / "clips"
    for label in ("alarm", "water"):
        write(only_events / label / "a.wav", tone(2500, 1.0))
    with pytest.raises(PipelineError, match="background classes"):
        calibrate.main([f"--model={tflite}", f"--data_dir={only_events}", "--store=false",
                        f"--report_dir={tmp_path}"])


def test_labelled_recordings_are_calibrated_on(model, tmp_path):
    _, _, tflite = model
    folder = tmp_path / "kitchen"
    write(folder / "evening.wav", np.concatenate(
        [tone(150, 6.0, level=0.2, noise=0.02), tone(2600, 4.0), tone(160, 6.0, level=0.2)]))
    (folder / "evening.txt").write_text("6.0\t10.0\talarm\n")
    report = tmp_path / "r"
    meta_before = (tflite.parent / "model_16k.json").read_bytes()
    assert calibrate.main([f"--model={tflite}", f"--recordings={folder}", "--stream_hours=0",
                           "--store=false", f"--report_dir={report}"]) == 0
    result = json.loads((report / "calibration.json").read_text())
    assert result["hours"] == pytest.approx(16.0 / 3600, rel=1e-3)
    assert result["per_class"]["alarm"]["events"] == 1
    assert result["per_class"]["water"]["events"] == 0
    assert (tflite.parent / "model_16k.json").read_bytes() == meta_before  # --store=false


def test_thresholds_for_another_window_are_refused(model, tmp_path):
    """Thresholds chosen for 2 s windows every 1 s do not silently serve 3 s
    windows: predict.py refuses, unless a threshold is given instead."""
    tmp, _, tflite = model
    calibration.store(tflite, choice(0.4))
    recording = write(tmp_path / "rec.wav", tone(2600, 8.0))
    with pytest.raises(PipelineError, match=r"calibrated for 2 s windows every 1 s.*"
                                            r"calibrate.py --window_s=3 --hop_s=1"):
        predict.main([f"--model={tflite}", str(recording), "--window_s=3"])
    assert predict.main([f"--model={tflite}", str(recording), "--window_s=3",
                         "--threshold=0.5"]) == 0
    meta = json.loads((tflite.parent / "model_16k.json").read_text())
    meta["calibration"]["feature_version"] = -1
    (tflite.parent / "model_16k.json").write_text(json.dumps(meta))
    with pytest.raises(PipelineError, match=r"feature version -1"):
        predict.main([f"--model={tflite}", str(recording)])
    calibration.store(tflite, choice(0.4))


def test_a_calibration_for_other_windows_is_stored_and_used(model, tmp_path):
    """Round three, 13: calibrating with --window_s=3 stores (it could never
    store before): the model then listens with 3 s windows by default, and
    the device header says so."""
    tmp, _, tflite = model
    meta_path = tflite.parent / "model_16k.json"
    before = meta_path.read_text()
    try:
        calibration.store(tflite, choice(0.4, window_s=3.0))
        meta = json.loads(meta_path.read_text())
        assert meta["events"]["window_s"] == 3.0 and meta["calibration"]["window_s"] == 3.0
        header = (tflite.parent / "model_16k_frontend.h").read_text()
        assert "#define AF_MODEL_WINDOW_SAMPLES 48000" in header
        recording = write(tmp_path / "rec.wav", tone(2600, 8.0))
        assert predict.main([f"--model={tflite}", str(recording)]) == 0
    finally:
        meta_path.write_text(before)
        calibration.store(tflite, choice(0.4))


def test_device_event_code_limit_is_pythons():
    import re
    from conftest import ROOT
    from pipeline.event_settings import DEVICE_MAX_SMOOTH
    header = (ROOT / "device" / "include" / "af_events.h").read_text()
    assert int(re.search(r"#define AF_EVENTS_MAX_SMOOTH (\d+)", header).group(1)) == \
        DEVICE_MAX_SMOOTH


@pytest.mark.parametrize("tamper, message", [
    (lambda c: c.update(thresholds={"alarm": "high"}), "are not probabilities"),
    (lambda c: c.update(thresholds=[0.5]), "are not probabilities"),
    (lambda c: c.pop("window_s"), "lacks window_s"),
    (lambda c: c.update(smooth_windows=0.5), "smooth_windows=0.5"),
])
def test_tampered_calibration_is_a_clear_error(model, tmp_path, tamper, message):
    _, _, tflite = model
    calibration = choice(0.4)
    tamper(calibration)
    meta_path = tflite.parent / "model_16k.json"
    before = meta_path.read_text()
    meta = json.loads(before)
    meta["calibration"] = calibration
    meta_path.write_text(json.dumps(meta))
    try:
        with pytest.raises(PipelineError, match=message):
            predict.main([f"--model={tflite}", str(write(tmp_path / "a.wav", tone(2600, 1.0)))])
    finally:
        meta_path.write_text(before)


def test_too_little_background_is_reported_not_stored(model, tmp_path, capsys):
    """The demo-sized test split holds seconds of distinct background: the
    choice is reported, and the model keeps its settings (exit status 1)."""
    tmp, dataset, tflite = model
    meta_before = (tflite.parent / "model_16k.json").read_bytes()
    header_before = (tflite.parent / "model_16k_frontend.h").read_bytes()
    assert calibrate.main([f"--model={tflite}", f"--data_dir={tmp / 'clips'}",
                           "--stream_hours=0.05", "--segment_s=60", "--snrs_db=10",
                           "--event_gap_s=10", "--target_fa_per_hour=20",
                           f"--report_dir={tmp_path}"]) == 1
    out = capsys.readouterr().out
    assert "not stored with the model" in out and "min of distinct background" in out
    assert "--store=force" in out
    assert (tflite.parent / "model_16k.json").read_bytes() == meta_before
    assert (tflite.parent / "model_16k_frontend.h").read_bytes() == header_before


def test_event_free_recordings_store_nothing_and_no_nan(model, tmp_path, capsys):
    """Calibrating on recordings without events gives no recall to choose
    by: nothing is stored, even with no background minimum, and the report
    is standard JSON (no NaN)."""
    _, _, tflite = model
    folder = tmp_path / "quiet"
    write(folder / "hum.wav", tone(150, 20.0, level=0.2, noise=0.02))
    (folder / "hum.txt").write_text("")
    meta_before = (tflite.parent / "model_16k.json").read_bytes()
    assert calibrate.main([f"--model={tflite}", f"--recordings={folder}", "--stream_hours=0",
                           "--min_background_min=0", f"--report_dir={tmp_path / 'r'}"]) == 1
    assert "no alarm events in the streams" in capsys.readouterr().out
    assert (tflite.parent / "model_16k.json").read_bytes() == meta_before
    text = (tmp_path / "r" / "calibration.json").read_text()
    assert "NaN" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON: {c}"))


@pytest.mark.parametrize("args, message", [
    (["--stream_hours=1e9"], r"--stream_hours=1000000000.0: expected a number in \[0, 1000\]"),
    (["--stream_hours=inf"], r"--stream_hours=inf"),
    (["--segment_s=1e308"], r"--segment_s=1e\+308"),
    (["--min_event_choices=-5"], r"--min_event_choices='-5'"),
    (["--smooth_choices=0"], r"--smooth_choices='0'"),
    (["--store=maybe"], r"--store='maybe': expected true, false or force"),
    (["--window_s=2", "--hop_s=3"], r"--hop_s=3.0"),
    (["--smooth_choices=1,20"], r"--smooth_choices=1,20: the device's event code smooths over "
                                r"at most 15"),
])
def test_settings_out_of_range_are_refused_before_work(model, tmp_path, args, message):
    _, _, tflite = model
    with pytest.raises(PipelineError, match=message):
        calibrate.main([f"--model={tflite}", f"--report_dir={tmp_path}", *args])


def test_stream_workers_end_with_a_killed_run(model, tmp_path):
    """SIGKILL of calibrate.py leaves no worker behind (they used to live on
    for minutes, holding hundreds of MB each)."""
    import subprocess
    import sys
    import time

    import psutil
    from conftest import ROOT
    tmp, _, tflite = model
    proc = subprocess.Popen([sys.executable, "calibrate.py", f"--model={tflite}",
                             f"--data_dir={tmp / 'clips'}", "--stream_hours=20", "--jobs=2",
                             "--store=false", f"--report_dir={tmp_path}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent, deadline, workers = psutil.Process(proc.pid), time.monotonic() + 90, []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = [p for p in parent.children(recursive=True)
                   if "resource_tracker" not in " ".join(p.cmdline())]
        time.sleep(0.2)
    assert len(workers) >= 2, "no stream workers appeared"
    time.sleep(3.0)  # let them start on a segment
    children = parent.children(recursive=True)
    proc.kill()
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == []
