import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import features
import make_dataset_16k
import model_conv
import predict
import train_16k
from pipeline import event_settings, events, inference
from pipeline.errors import PipelineError
from conftest import ROOT, make_class_folder, noise, tone, train_settings, write

CLASSES = ("beep", "hiss", "tone")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model trained on three easy classes, converted to int8."""
    tmp = tmp_path_factory.mktemp("predict")
    clips = make_class_folder(tmp / "clips", per_class=10, classes=CLASSES)
    dataset = tmp / "ds.npz"
    make_dataset_16k.main([f"--data_dir={clips}", f"--dataset={dataset}", "--jobs=1"])
    args = [f"--dataset={dataset}", f"--model_dir={tmp / 'models'}", f"--report_dir={tmp / 'r'}"]
    train_16k.main(args + ["--epochs=40", "--patience=20"])
    model_conv.main(args + ["--min_agreement=0"])
    return tmp / "models"


def run(model_dir, *args):
    return predict.main([f"--model={model_dir / 'model_16k_int8.tflite'}", *map(str, args)])


@pytest.fixture
def fresh_clips(tmp_path):
    """New clips, not in the training set, one folder per class."""
    root = tmp_path / "fresh"
    for i in range(3):
        write(root / "beep" / f"b{i}.wav", tone(620.0 + 30 * i, 1.0, seed=50 + i))
        write(root / "hiss" / f"h{i}.wav", noise(1.0, seed=60 + i, low_hz=1500))
        write(root / "tone" / f"t{i}.wav", tone(2600.0 + 100 * i, 1.0, seed=70 + i))
    return root


def test_clips_are_classified_correctly(model_dir, fresh_clips, tmp_path):
    out = tmp_path / "out.json"
    assert run(model_dir, fresh_clips, "--json", out) == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == 9
    for r in results:
        assert r["class"] == r["path"].split("/")[-2], r
        assert abs(sum(r["probabilities"].values()) - 1) < 0.05


def test_keras_model_agrees(model_dir, fresh_clips, tmp_path):
    out = tmp_path / "keras.json"
    predict.main([f"--model={model_dir / 'model_16k.keras'}", str(fresh_clips), "--json", str(out)])
    assert all(r["class"] == r["path"].split("/")[-2]
               for r in json.loads(out.read_text())["results"])


def test_long_recording_gives_one_event_at_the_burst(model_dir, tmp_path):
    recording = np.concatenate([noise(4.0, seed=1, low_hz=1500), tone(2700.0, 4.0, seed=2),
                                noise(4.0, seed=3, low_hz=1500)])
    path = write(tmp_path / "long.wav", recording)
    out, png = tmp_path / "long.json", tmp_path / "timeline.png"
    run(model_dir, path, "--window_s=1.0", "--hop_s=0.5", "--background_classes=hiss",
        "--json", out, "--timeline", png)
    events = json.loads(out.read_text())["results"][0]["events"]
    assert len(events) == 1, events
    assert events[0]["class"] == "tone"
    assert abs(events[0]["start_s"] - 4.0) <= 0.5 and abs(events[0]["end_s"] - 8.0) <= 0.5
    assert events[0]["peak_probability"] >= events[0]["mean_probability"] > 0.5
    assert png.stat().st_size > 1000


def test_csv_is_complete_and_bad_files_get_error_rows(model_dir, fresh_clips, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFFjunkjunk")
    silent = write(tmp_path / "silent.wav", np.zeros(16000, np.float32))
    out = tmp_path / "out.csv"
    status = run(model_dir, fresh_clips / "tone", broken, silent, "--all", "--csv", out)
    assert status == 1
    printed = capsys.readouterr().out
    assert "broken.wav: error: cannot read audio" in printed and "silent.wav: error:" in printed
    assert "beep=" in printed  # --all prints every class
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"].split("/")[-1] for r in rows] == ["t0.wav", "t1.wav", "t2.wav",
                                                        "broken.wav", "silent.wav"]
    assert {f"p_{c}" for c in CLASSES} <= set(rows[0])
    assert rows[0]["class"] == "tone" and rows[0]["error"] == ""
    assert rows[3]["error"] and rows[3]["class"] == "" and "zero" in rows[4]["error"]


def test_tflite_prediction_never_imports_tensorflow(model_dir, fresh_clips):
    code = ("import sys, predict; predict.main(['--model={}', '{}']); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
            "assert not bad, bad; print('clean')").format(
                model_dir / "model_16k_int8.tflite", fresh_clips / "beep" / "b0.wav")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "clean" in result.stdout and "beep" in result.stdout


def test_evaluate_labelled_folder(model_dir, fresh_clips, tmp_path):
    out = tmp_path / "metrics.json"
    assert run(model_dir, f"--evaluate={fresh_clips}", "--json", out,
               f"--report_dir={tmp_path / 'r'}") == 0
    metrics = json.loads(out.read_text())
    assert metrics["accuracy"] == 1.0 and metrics["labels"] == list(CLASSES)
    assert set(metrics["per_class"]["tone"]) == {"precision", "recall", "f1", "support"}
    assert (tmp_path / "r" / "confusion_evaluate.png").exists()


def test_missing_model_or_metadata(model_dir, tmp_path, fresh_clips):
    with pytest.raises(PipelineError, match="model_conv.py"):
        predict.main([f"--model={tmp_path / 'none.tflite'}", str(fresh_clips)])
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model_dir / "model_16k_int8.tflite", bare)
    with pytest.raises(PipelineError, match="model metadata not found.*train_16k.py"):
        predict.main([f"--model={bare / 'model_16k_int8.tflite'}", str(fresh_clips)])


def test_cli_reports_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "predict.py", f"--model={tmp_path / 'x.tflite'}",
                             "a.wav"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model not found" in result.stderr


def test_events_and_smoothing_helpers():
    probs = np.array([[0.1], [0.9], [0.9], [0.9], [0.1]])
    assert np.allclose(events.smooth(probs, 3)[:, 0], [0.5, 0.633333, 0.9, 0.633333, 0.5])
    centres = np.arange(5) * 0.5 + 0.5
    found = events.find_events(centres, probs, ["x"], {"x": 0.5}, min_duration=1.0,
                               hop_s=0.5, background=set())
    assert [(e["start_s"], e["end_s"]) for e in found] == [(0.75, 2.25)]
    assert events.find_events(centres, probs, ["x"], {"x": 0.5}, min_duration=2.0,
                              hop_s=0.5, background=set()) == []
    assert events.find_events(centres, probs, ["x"], {"x": 0.5}, min_duration=1.0,
                              hop_s=0.5, background={"x"}) == []
    assert events.window_starts(100, 40, 20) == [0, 20, 40, 60]
    assert events.window_starts(110, 40, 20) == [0, 20, 40, 60, 70]
    # on a grid of 8 samples: every start rounded down to it, the last too
    assert events.window_starts(110, 40, 20, 8) == [0, 16, 40, 56, 64]
    assert events.window_starts(100, 40, 20, 8) == [0, 16, 40, 56]
    y = np.arange(110, dtype=np.float32)
    cut = [(s, w[0], len(w)) for s, w in events.stream_windows(np.split(y, [7, 50, 51]), 40, 20, 8)]
    assert cut == [(s, s, 40) for s in (0, 16, 40, 56, 64)]


def test_cnn_with_standardisation_round_trips(model_dir, fresh_clips):
    """The default preset stores a standardisation; predict.py (Keras and
    int8) must apply exactly what the model was trained with."""
    import keras

    import features
    from pipeline import artifacts
    from pipeline.tflite_model import TFLiteModel
    meta = artifacts.load_model_metadata(model_dir)
    assert meta["model_type"] == "cnn" and meta["input_standardisation"]
    mean = np.array(meta["input_standardisation"]["mean"], np.float32)
    std = np.array(meta["input_standardisation"]["std"], np.float32)
    clip = fresh_clips / "tone" / "t1.wav"
    manual = (features.extract_or_reason(clip, meta["feature_config"]).vector - mean) / std
    from pipeline import open_set
    keras_model = keras.models.load_model(model_dir / "model_16k.keras")
    expected = open_set.calibrate(keras_model.predict(manual[None, :], verbose=0),
                                  meta["open_set"]["temperature"])[0]
    via_keras = inference.Classifier(model_dir / "model_16k.keras")
    via_int8 = inference.Classifier(model_dir / "model_16k_int8.tflite")
    feats = features.extract_or_reason(clip, meta["feature_config"]).vector
    np.testing.assert_allclose(via_keras.probabilities(feats)[0], expected, atol=1e-5)
    int8 = open_set.calibrate(TFLiteModel(model_dir / "model_16k_int8.tflite").predict_proba(
        manual[None, :]), meta["open_set"]["temperature"])[0]
    np.testing.assert_allclose(via_int8.probabilities(feats)[0], int8, atol=1e-6)
    assert np.abs(int8 - expected).max() < 0.05


def test_model_keeps_working_after_features_py_changes(model_dir, fresh_clips, monkeypatch,
                                                       tmp_path):
    """predict.py computes features from the model's stored configuration,
    so editing features.py (another preset, another FFT) changes nothing."""
    import features
    out_before, out_after = tmp_path / "before.json", tmp_path / "after.json"
    assert run(model_dir, fresh_clips, "--json", out_before) == 0
    monkeypatch.setattr(features, "FEATURES", "seed")
    monkeypatch.setattr(features, "N_FFT", 1024)
    assert run(model_dir, fresh_clips, "--json", out_after) == 0
    before = json.loads(out_before.read_text())["results"]
    assert before == json.loads(out_after.read_text())["results"]


def test_feature_version_mismatch_is_refused(model_dir, tmp_path, fresh_clips):
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    meta = json.loads((other / "model_16k.json").read_text())
    meta["feature_config"]["version"] = 1
    (other / "model_16k.json").write_text(json.dumps(meta))
    with pytest.raises(PipelineError, match="feature code version 1"):
        predict.main([f"--model={other / 'model_16k_int8.tflite'}", str(fresh_clips)])


def copy_model(model_dir, tmp_path, name="copy"):
    other = tmp_path / name
    shutil.copytree(model_dir, other)
    return other


def edit_meta(folder, change):
    meta = json.loads((folder / "model_16k.json").read_text())
    change(meta)
    (folder / "model_16k.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b""), "not converted from the model"),
    (lambda p: p.write_bytes(p.read_bytes()[:500]), "not converted from the model"),
])
def test_damaged_tflite_is_refused(model_dir, tmp_path, fresh_clips, damage, message):
    other = copy_model(model_dir, tmp_path)
    damage(other / "model_16k_int8.tflite")
    with pytest.raises(PipelineError, match=message):
        run(other, fresh_clips)


def test_corrupt_files_with_matching_checksums_give_a_message(model_dir, tmp_path, fresh_clips):
    """Even a file that the metadata vouches for is checked when loaded."""
    from pipeline import files
    other = copy_model(model_dir, tmp_path)
    for name, key in (("model_16k_int8.tflite", None), ("model_16k.keras", "keras_sha256")):
        (other / name).write_bytes(b"garbage, not a model")
        digest = files.file_sha256(other / name)

        def vouch(meta):
            if key:
                meta[key] = digest
            else:
                meta["conversion"]["sha256"]["int8_tflite"] = digest
        edit_meta(other, vouch)
        with pytest.raises(PipelineError, match="not a usable .tflite|cannot load the Keras"):
            predict.main([f"--model={other / name}", str(fresh_clips)])


def test_model_of_another_run_is_refused(model_dir, tmp_path, fresh_clips):
    """A retraining killed after writing the .keras but before the metadata:
    the new .keras is refused; the .tflite still matches the old metadata."""
    other = copy_model(model_dir, tmp_path)
    keras_file = other / "model_16k.keras"
    keras_file.write_bytes(keras_file.read_bytes() + b"\0")  # "another training run"
    with pytest.raises(PipelineError, match="not the Keras model.*train_16k.py"):
        predict.main([f"--model={keras_file}", str(fresh_clips)])
    assert run(other, fresh_clips) == 0
    edit_meta(other, lambda meta: meta.pop("conversion"))  # trained again, not converted yet
    with pytest.raises(PipelineError, match="not converted from.*model_conv.py"):
        run(other, fresh_clips)


def twenty_bands(meta):
    """Metadata consistent in itself, for 20 mel bands: not this model's input."""
    meta["feature_config"].update(n_mels=20, n_features=61 * 20, input_shape=[61, 20])
    meta["input_standardisation"] = {"mean": [0.0] * 1220, "std": [1.0] * 1220}


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(labels=m["labels"][:2]), "2 labels"),
    (lambda m: m.update(labels=m["labels"] + ["extra"]), "4 labels"),
    (lambda m: m.update(labels=["a", "a", "b"]), "distinct class names"),
    (lambda m: m["input_standardisation"].update(std=[0.0] * len(m["input_standardisation"]["std"])),
     "non-positive"),
    (lambda m: m["input_standardisation"].update(mean=[0.0] * 5), "5 means"),
    (lambda m: m["input_standardisation"].update(mean=[float("nan")] * len(
        m["input_standardisation"]["mean"])), "NaN"),
    (lambda m: twenty_bands(m), "the model takes 2440 inputs"),
])
def test_metadata_that_does_not_fit_the_model_is_refused(model_dir, tmp_path, fresh_clips,
                                                         change, message):
    other = copy_model(model_dir, tmp_path)
    edit_meta(other, change)
    with pytest.raises(PipelineError, match=message):
        run(other, fresh_clips)


@pytest.mark.parametrize("args, message", [
    (["--thresholds=beep=1.5"], r"outside \[0, 1\]"),
    (["--threshold=-0.1"], r"--threshold=-0.1: expected a probability in \[0, 1\]"),
    (["--smooth_windows=0"], r"--smooth_windows=0: expected a whole number of windows"),
    (["--window_s=0"], r"--window_s=0.0: expected a window length"),
    (["--window_s=2", "--hop_s=3"], r"--hop_s=3.0: expected a step in \[0.001, window_s\]"),
])
def test_bad_event_settings(model_dir, fresh_clips, args, message):
    with pytest.raises(PipelineError, match=message):
        run(model_dir, fresh_clips, *args)


def test_folder_without_audio_is_an_error(model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="no audio files in"):
        run(model_dir, tmp_path / "empty")


def test_flag_does_not_swallow_the_next_path(model_dir, fresh_clips, capsys):
    clip = fresh_clips / "beep" / "b0.wav"
    assert predict.main([f"--model={model_dir / 'model_16k_int8.tflite'}", "--all", str(clip)]) == 0
    out = capsys.readouterr().out
    assert "b0.wav: beep" in out and "hiss=" in out


def test_evaluate_json_counts_unscored_files(model_dir, fresh_clips, tmp_path):
    (fresh_clips / "tone" / "broken.wav").write_bytes(b"RIFFjunk")
    out = tmp_path / "metrics.json"
    assert run(model_dir, f"--evaluate={fresh_clips}", "--json", out,
               f"--report_dir={tmp_path / 'r'}") == 1
    metrics = json.loads(out.read_text())
    assert metrics["clips_scored"] == 9 and metrics["clips_failed"] == 1
    assert metrics["failed"][0]["path"].endswith("broken.wav")
    assert "cannot read audio" in metrics["failed"][0]["error"]


def test_long_recording_is_streamed_with_the_same_windows(model_dir, tmp_path):
    """The streamed windows give the probabilities of the windows cut from
    the whole recording, also when it must be resampled (44.1 kHz stereo)."""
    import features
    from pipeline.events import window_starts
    y = np.concatenate([noise(3.0, seed=4, low_hz=1500, sr=44100),
                        tone(2700.0, 3.7, seed=5, sr=44100)])
    path = write(tmp_path / "rec.wav", np.stack([y, y], axis=1), sr=44100)
    classifier = inference.Classifier(model_dir / "model_16k_int8.tflite")
    centres, probs, usable, duration = inference.window_probabilities(classifier, path,
                                                                      window_s=1.0, hop_s=0.5)
    whole = features.load_audio(path, 16000)
    starts = window_starts(whole.size, 16000, 8000, classifier.config.window_alignment)
    expected = np.stack([classifier.probabilities(features.features_from_audio(
        whole[s:s + 16000], classifier.config))[0] for s in starts])
    assert len(probs) == len(starts) and usable.all()
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert abs(duration - whole.size / 16000) < 1e-9
    assert abs(centres[-1] - (starts[-1] + 8000) / 16000) < 1e-9


def test_stored_open_set_rule_decides(model_dir, fresh_clips, tmp_path):
    """An event class that is not sure enough falls back to the background
    class stored with the model; without a fallback the top class wins."""
    meta = json.loads((model_dir / "model_16k.json").read_text())
    assert meta["open_set"]["temperature"] > 0  # fitted in training
    strict = copy_model(model_dir, tmp_path, "strict")
    edit_meta(strict, lambda m: m.update(open_set={"temperature": 1.0, "min_probability": 1.0,
                                                  "background": "hiss"}))
    out = tmp_path / "strict.json"
    run(strict, fresh_clips, "--json", out)
    results = json.loads(out.read_text())["results"]
    assert {r["class"] for r in results} == {"hiss"}
    for r in results:  # the probabilities are reported as they are
        assert r["probability"] == r["probabilities"]["hiss"]


def test_evaluate_events_scores_labelled_recordings(model_dir, tmp_path, capsys):
    folder = tmp_path / "recs"
    recording = np.concatenate([noise(4.0, seed=1, low_hz=1500), tone(2700.0, 4.0, seed=2),
                                noise(6.0, seed=3, low_hz=1500), tone(2900.0, 3.0, seed=4),
                                noise(3.0, seed=5, low_hz=1500)])
    write(folder / "kitchen.wav", recording)
    # the first tone labelled, the second not (so it is a false activation), plus a
    # labelled beep that never sounds (a miss); "hiss" labels are background, ignored
    (folder / "kitchen.txt").write_text("0\t4\thiss\n4.0\t8.0\ttone\n9\t10\tbeep\n")
    out = tmp_path / "events.json"
    assert run(model_dir, "--evaluate_events", folder, "--window_s=1.0", "--hop_s=0.5",
               "--background_classes=hiss", "--json", out) == 0
    scores = json.loads(out.read_text())
    assert scores["per_class"]["tone"]["true_positives"] == 1
    assert scores["per_class"]["tone"]["false_positives"] == 1
    assert scores["per_class"]["beep"]["false_negatives"] == 1
    assert scores["hours"] == pytest.approx(20.0 / 3600, rel=1e-3)
    assert scores["overall"]["false_activations_per_hour"] == pytest.approx(3600 / 20.0,
                                                                             rel=1e-3)
    # the standard view beside it: sed_eval's 200 ms collar, here stricter than 1 s
    assert set(scores["standard"]["per_class"]) == {"beep", "tone"}
    assert scores["standard"]["per_class"]["beep"]["recall"] == 0.0
    assert "standard view (sed_eval event-based" in capsys.readouterr().out
    (folder / "kitchen.txt").write_text("4\t8\tdog\n")
    with pytest.raises(PipelineError, match=r"kitchen.txt:1: unknown label 'dog'"):
        run(model_dir, "--evaluate_events", folder)
    (folder / "kitchen.txt").unlink()
    with pytest.raises(PipelineError, match=r"kitchen.txt: label file missing"):
        run(model_dir, "--evaluate_events", folder)


def test_mined_clips_are_exactly_the_windows_that_fired(model_dir, tmp_path):
    import soundfile
    household = tmp_path / "household"
    recording = np.concatenate([noise(4.0, seed=1, low_hz=1500), tone(2700.0, 3.0, seed=2),
                                noise(5.0, seed=3, low_hz=1500)])
    path = write(household / "day.wav", recording)
    into = tmp_path / "clips" / "hiss"
    args = ["--window_s=1.0", "--hop_s=0.5", "--background_classes=hiss"]
    assert run(model_dir, "--mine", household, "--into", into, *args) == 0
    classifier = inference.Classifier(model_dir / "model_16k_int8.tflite")
    settings = event_settings.event_settings(classifier.meta, window_s=1.0, hop_s=0.5,
                                        background="hiss")
    result = inference.classify_file(classifier, path, settings)
    assert result["events"], "the tone should fire"
    centres, _, _, _ = inference.window_probabilities(classifier, path, window_s=1.0, hop_s=0.5)
    expected = [c for c in centres
                if any(e["start_s"] <= round(c, 3) <= e["end_s"] for e in result["events"])]
    with open(into / "mined.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(expected) > 0
    windows = dict(events.stream_windows(features.stream_audio(path, 16000),
                                         16000, 8000, classifier.config.window_alignment))
    for row in rows:
        start = round(float(row["start_s"]) * 16000)
        clip, rate = soundfile.read(into / row["clip"], dtype="float32")
        assert rate == 16000 and row["recording"] == str(path)
        assert np.max(np.abs(clip - windows[start])) <= 1 / 32768  # 16-bit of that window
        assert (start + 8000) / 16000 in [round(c, 6) for c in expected]


def test_mining_twice_gives_the_same_clips_and_one_row_each(model_dir, tmp_path, capsys):
    household = tmp_path / "household"
    write(household / "day.wav", np.concatenate([noise(3.0, seed=1, low_hz=1500),
                                                 tone(2700.0, 3.0, seed=2)]))
    into = tmp_path / "mined"
    args = ["--mine", household, "--into", into, "--window_s=1.0", "--hop_s=0.5",
            "--background_classes=hiss"]
    assert run(model_dir, *args) == 0
    first = (into / "mined.csv").read_text()
    clips = sorted(p.name for p in into.glob("*.wav"))
    assert run(model_dir, *args) == 0
    assert (into / "mined.csv").read_text() == first         # no duplicate rows
    assert sorted(p.name for p in into.glob("*.wav")) == clips
    assert len(first.strip().splitlines()) == len(clips) + 1 > 1
    assert "python model_conv.py" in capsys.readouterr().out  # the whole retrain chain


def test_mining_failure_half_way_still_lists_every_saved_clip(model_dir, tmp_path, monkeypatch):
    """A failure after some clips were written leaves mined.csv listing
    exactly the clips on disk."""
    household = tmp_path / "household"
    for name in ("a", "b"):
        write(household / f"{name}.wav", np.concatenate([noise(3.0, seed=1, low_hz=1500),
                                                         tone(2700.0, 3.0, seed=2)]))
    real = inference.classify_file
    seen = []

    def fail_on_second(classifier, path, events):
        seen.append(path)
        if len(seen) == 2:
            raise OSError("File name too long")
        return real(classifier, path, events)

    monkeypatch.setattr(inference, "classify_file", fail_on_second)
    into = tmp_path / "mined"
    with pytest.raises(OSError):
        run(model_dir, "--mine", household, "--into", into, "--window_s=1.0", "--hop_s=0.5",
            "--background_classes=hiss")
    with open(into / "mined.csv", newline="") as fh:
        listed = sorted(row["clip"] for row in csv.DictReader(fh))
    assert listed == sorted(p.name for p in into.glob("*.wav")) and listed


def test_mined_csv_that_is_not_text_is_a_clear_error(model_dir, tmp_path):
    household = tmp_path / "household"
    write(household / "day.wav", noise(3.0, seed=1, low_hz=1500))
    into = tmp_path / "mined"
    into.mkdir()
    (into / "mined.csv").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(PipelineError, match=r"mined.csv: not a mined.csv this script wrote"):
        run(model_dir, "--mine", household, "--into", into)


def test_model_dir_finds_the_int8_model(model_dir, fresh_clips, tmp_path):
    """--model_dir is spelt as in train_16k.py and model_conv.py; --model
    still names one file."""
    out = tmp_path / "out.json"
    assert predict.main([f"--model_dir={model_dir}", str(fresh_clips), f"--json={out}"]) == 0
    assert json.loads(out.read_text())["model"] == str(model_dir / "model_16k_int8.tflite")
    with pytest.raises(PipelineError, match=r"nowhere/model_16k_int8.tflite: model not found"):
        predict.main([f"--model_dir={tmp_path / 'nowhere'}", str(fresh_clips)])


def test_event_settings_come_from_the_model(model_dir, tmp_path):
    """The window, hop and thresholds are the model's (stored by
    train_16k.py), not predict.py's constants; --help says so."""
    meta = json.loads((model_dir / "model_16k.json").read_text())
    stored = train_settings()
    assert meta["events"] == {"window_s": stored.window_s, "hop_s": stored.hop_s,
                              "smooth_windows": stored.smooth_windows,
                              "threshold": stored.threshold, "min_event_s": stored.min_event_s,
                              "background": [stored.background_classes]}
    other = copy_model(model_dir, tmp_path)
    edit_meta(other, lambda m: m["events"].update(window_s=1.0, hop_s=0.5))
    clip = write(tmp_path / "clip.wav", tone(2700.0, 1.5, seed=2))
    out = tmp_path / "out.json"
    assert run(model_dir, clip, f"--json={out}") == 0
    assert "events" not in json.loads(out.read_text())["results"][0]  # one 2 s window
    assert run(other, clip, f"--json={out}") == 0
    assert "events" in json.loads(out.read_text())["results"][0]  # 1 s windows: a recording
    classifier = inference.Classifier(other / "model_16k_int8.tflite")
    assert event_settings.event_settings(classifier.meta).window_s == 1.0
    help_text = subprocess.run([sys.executable, "predict.py", "--help"], capture_output=True,
                               text=True, cwd=ROOT, check=True).stdout
    assert "(default: 0.5)" not in help_text and "the model's" in help_text


def test_event_evaluation_of_quiet_and_overlapping_recordings(model_dir, tmp_path, capsys):
    """A silent recording with an empty label file counts its hours and no
    events (it used to abort the run); three overlapping labels of one class
    are one event; a missing folder is named as such."""
    folder = tmp_path / "recs"
    write(folder / "quiet.wav", np.zeros(5 * 16000, np.float32))
    (folder / "quiet.txt").write_text("")
    write(folder / "beeps.wav", np.concatenate([noise(3.0, seed=1, low_hz=1500),
                                                tone(2700.0, 4.0, seed=2)]))
    (folder / "beeps.txt").write_text("3.0\t5.0\ttone\n3.5\t6.0\ttone\n4.0\t7.0\ttone\n")
    out = tmp_path / "events.json"
    assert run(model_dir, "--evaluate_events", folder, "--json", out,
               "--background_classes=hiss") == 0
    scores = json.loads(out.read_text())
    tone_counts = scores["per_class"]["tone"]
    assert tone_counts["true_positives"] + tone_counts["false_negatives"] == 1  # one event
    assert scores["hours"] == pytest.approx(12.0 / 3600, rel=1e-3)
    with pytest.raises(PipelineError, match="nowhere: no such folder"):
        run(model_dir, "--evaluate_events", tmp_path / "nowhere")


def test_fifo_input_is_an_error_line_not_a_hang(model_dir, tmp_path, capsys):
    import os
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    assert run(model_dir, fifo) == 1
    assert "not a regular file" in capsys.readouterr().out


def test_model_folder_is_one_set(model_dir, tmp_path, fresh_clips):
    """A front-end header that the metadata does not vouch for (a run killed
    between writing it and the metadata) makes the folder unusable until it
    is converted again."""
    other = copy_model(model_dir, tmp_path)
    with open(other / "model_16k_frontend.h", "a") as fh:
        fh.write("/* edited */\n")
    with pytest.raises(PipelineError, match=r"model_16k_frontend.h: not the file that "
                                            r"model_16k.json describes.*model_conv.py"):
        run(other, fresh_clips)


def long_recording(path):
    """60 s of hiss with three tones (events of 'tone') and one beep burst."""
    parts = [noise(12.0, seed=1, low_hz=1500), tone(2700.0, 6.0, seed=2),
             noise(14.0, seed=3, low_hz=1500), tone(650.0, 5.0, seed=4),
             noise(9.0, seed=5, low_hz=1500), tone(2600.0, 4.0, seed=6),
             noise(10.0, seed=7, low_hz=1500)]
    return write(path, np.concatenate(parts))


def test_listening_to_a_file_finds_predict_pys_events(model_dir, tmp_path, capsys):
    """--listen=FILE goes through the same windows, model and events as
    predict.py FILE, at 50x real time, and saves each event's audio."""
    import re
    import soundfile
    recording = long_recording(tmp_path / "rec.wav")
    out = tmp_path / "out.json"
    assert run(model_dir, recording, "--json", out, "--background_classes=hiss") == 0
    expected = [(e["class"], e["start_s"], e["end_s"])
                for e in json.loads(out.read_text())["results"][0]["events"]]
    assert expected, "the fixture model should find the tones"
    capsys.readouterr()
    saved = tmp_path / "events"
    assert run(model_dir, f"--listen={recording}", "--speed=50", f"--save_events={saved}",
               "--background_classes=hiss") == 0
    printed = capsys.readouterr().out
    ended = [(m[0], float(m[1]), float(m[2])) for m in
             re.findall(r"event (\w+) ended +([\d.]+)-([\d.]+) s", printed)]
    assert sorted(ended) == sorted(expected)
    assert re.search(r"listened 1\.00 min; events: .*onset to first report: mean", printed)
    clips = sorted(saved.glob("*.wav"))
    assert len(clips) == len(expected)
    for (label, start, end), clip in zip(sorted(expected, key=lambda e: (e[0], e[1])), clips):
        assert clip.name.startswith(label)
        info = soundfile.info(clip)
        assert info.samplerate == 16000 and info.subtype == "PCM_16"
        assert info.duration >= end - start  # the event, with context around it


def test_listening_without_a_microphone_says_what_to_install(model_dir, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_portaudio(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    with pytest.raises(PipelineError, match="libportaudio2"):
        run(model_dir, "--listen=mic")


def test_one_timeline_per_recording_with_labels_when_evaluating(model_dir, tmp_path):
    """Spectrogram, probabilities with thresholds and detected events per
    recording; with --evaluate_events, a fourth row of labelled events."""
    import matplotlib.image
    folder = tmp_path / "recs"
    for name in ("kitchen", "hall"):
        long_recording(folder / f"{name}.wav")
        (folder / f"{name}.txt").write_text("12.0\t18.0\ttone\n")
    png = tmp_path / "figs" / "timeline.png"
    assert run(model_dir, folder, "--timeline", png, "--background_classes=hiss") == 0
    plain = {p.name: matplotlib.image.imread(p).shape for p in png.parent.glob("*.png")}
    assert set(plain) == {"timeline_kitchen.png", "timeline_hall.png"}
    scored = tmp_path / "scored" / "timeline.png"
    assert run(model_dir, "--evaluate_events", folder, "--timeline", scored,
               "--background_classes=hiss") == 0
    with_labels = matplotlib.image.imread(scored.parent / "timeline_kitchen.png").shape
    assert with_labels[0] > plain["timeline_kitchen.png"][0]  # the labelled-events row


def test_listen_refuses_what_is_not_a_recording_in_one_line(model_dir, tmp_path):
    """Round three, 4 and 6: a typo for mic, a folder, a FIFO or a speed too
    small to wait for are one-line errors, not tracebacks."""
    import os
    os.mkfifo(tmp_path / "fifo")
    for source, message in (("MIC", "no such recording"), (tmp_path, "not a regular file"),
                            (tmp_path / "fifo", "not a regular file")):
        with pytest.raises(PipelineError, match=f"--listen=.*{message}"):
            run(model_dir, f"--listen={source}")
    recording = write(tmp_path / "rec.wav", tone(650.0, 3.0))
    with pytest.raises(PipelineError, match="--speed=1e-300: expected 0"):
        run(model_dir, f"--listen={recording}", "--speed=1e-300")


def test_listen_closes_and_reports_events_when_the_stream_breaks(model_dir, tmp_path, capsys,
                                                                 monkeypatch):
    """Round three, 4: a recording that turns unreadable half-way still gets
    its events closed and the summary, then a one-line error and exit 1."""
    import features
    from pipeline import live
    recording = long_recording(tmp_path / "rec.wav")
    real = live.file_blocks

    def breaks_after_30_s(path, rate, **kwargs):
        fed = 0
        for block in real(path, rate, **kwargs):
            yield block
            fed += len(block)
            if fed >= 30 * rate:
                raise features.FeatureError("cannot read audio (corrupt block)", path)

    monkeypatch.setattr(live, "file_blocks", breaks_after_30_s)
    assert run(model_dir, f"--listen={recording}", "--speed=0",
               "--background_classes=hiss") == 1
    captured = capsys.readouterr()
    assert "event tone ended" in captured.out and "listened 0.50 min" in captured.out
    assert "stopped early" in captured.err and "corrupt block" in captured.err


def test_predict_runs_the_int8_model_with_the_devices_integers(model_dir, tmp_path):
    """Round three, 11: predict.py (and calibrate.py, through the same
    Classifier) get exactly TFLite Micro's int8 outputs on every window of a
    recording, not LiteRT's optimised kernels' (a step or two apart)."""
    from tflite_micro.python.tflite_micro import runtime
    import features
    from pipeline import views
    from pipeline.inference import Classifier
    from pipeline.tflite_model import TFLiteModel
    from pipeline.standardisation import standardise
    path = model_dir / "model_16k_int8.tflite"
    classifier = Classifier(path)
    y = features.load_audio(long_recording(tmp_path / "rec.wav"), 16000)
    rows = views.clip_windows(y, classifier.config, window_s=1.0, hop_s=0.25)
    x = standardise(rows, classifier.meta["input_standardisation"])
    ours = classifier._run(x)
    micro = runtime.Interpreter.from_bytes(path.read_bytes(), arena_size=256 * 1024)
    litert = TFLiteModel(path)
    expected = []
    for row in x:
        micro.set_input(litert.quantise_input(row)[None], 0)
        micro.invoke()
        expected.append(litert.dequantise_output(micro.get_output(0)[0]))
    assert len(rows) > 200 and np.array_equal(ours, np.array(expected))


def test_only_true_silence_is_no_event(model_dir, tmp_path, capsys):
    """Round three, 10: NaN or out-of-range samples in a window of a long
    recording are a fault named with its time, not "silence": predict.py
    fails that file, and --evaluate_events refuses it; a silent stretch is
    still just no event."""
    y = np.concatenate([tone(650.0, 4.0), np.zeros(16000 * 3, np.float32), tone(650.0, 4.0)])
    write(tmp_path / "quiet" / "rec.wav", y)  # true silence inside: fine
    assert run(model_dir, tmp_path / "quiet" / "rec.wav") == 0
    for name, bad in (("nan", np.nan), ("loud", 5000.0)):
        z = y.copy()
        z[5 * 16000:5 * 16000 + 100] = bad
        path = write(tmp_path / name / "rec.wav", z, subtype="FLOAT")
        capsys.readouterr()
        assert run(model_dir, path) == 1
        out = capsys.readouterr().out
        assert "error:" in out and "the window at" in out and "silent" not in out
        (tmp_path / name / "rec.txt").write_text("0.5\t3.5\ttone\n")
        with pytest.raises(PipelineError, match="the window at"):
            run(model_dir, "--evaluate_events", tmp_path / name)


def test_a_killed_mining_run_leaves_no_unlisted_clip_nor_temporary(model_dir, tmp_path,
                                                                     monkeypatch):
    """Round three, 17: each clip is listed in mined.csv before it is
    written, so a SIGKILL at any moment leaves no clip the table misses; the
    next run removes what a killed writer left and the rows whose clip never
    came."""
    import soundfile
    household = tmp_path / "household"
    write(household / "day.wav", np.concatenate([noise(3.0, seed=1, low_hz=1500),
                                                 tone(2700.0, 3.0, seed=2)]))
    into = tmp_path / "mined"
    into.mkdir()
    stale = into / ".mined_day_000000000ms.999999999.abc.tmp.wav"  # a dead writer's
    stale.write_bytes(b"half a clip")
    (into / "mined.csv").write_text("clip,recording,start_s,end_s,event_class,event_peak\n"
                                    "mined_gone.wav,x.wav,0,1,tone,0.9\n")
    real_write, listed_first = soundfile.write, []

    def checking_write(target, *args, **kwargs):
        name = Path(target).name.split(".")[1] + ".wav"  # .{name}.{pid}.{random}.tmp.wav
        listed_first.append(name in (into / "mined.csv").read_text())
        return real_write(target, *args, **kwargs)

    from pathlib import Path
    monkeypatch.setattr(soundfile, "write", checking_write)
    assert run(model_dir, "--mine", household, "--into", into, "--window_s=1.0",
               "--hop_s=0.5", "--background_classes=hiss") == 0
    assert listed_first and all(listed_first)
    assert not stale.exists() and "mined_gone" not in (into / "mined.csv").read_text()


def test_timeline_spectrogram_is_bounded_however_long_the_recording(tmp_path):
    """Round three, 18: the timeline's spectrogram has at most about
    max_frames frames (it grew by 236 MB per hour of recording)."""
    from pipeline import plots
    short = write(tmp_path / "short.wav", tone(650.0, 20.0))
    long = write(tmp_path / "long.wav", np.tile(tone(650.0, 20.0), 30))  # 10 minutes
    spec_short, _ = plots.coarse_spectrogram(short, 16000, max_frames=500)
    spec_long, times = plots.coarse_spectrogram(long, 16000, max_frames=500)
    assert spec_short.shape[1] == 20 / 0.05 - 1  # short recordings keep their 50 ms frames
    assert 450 <= spec_long.shape[1] <= 500 and times[-1] > 590
    assert spec_long.dtype == np.float32 or spec_long.nbytes <= 64 * 500 * 8
