"""Bad input, special files and misuse that need no trained model: each ends
in a clear message (or is handled), never a hang, a traceback or a
changed device node. (Cases that need a model live beside their stage's
tests: test_predict.py, test_calibrate.py, test_model_conv.py.)"""

import os
import subprocess
import sys

import numpy as np
import pytest

import make_dataset_16k
import train_16k
from conftest import ROOT, make_class_folder, tone, write
from pipeline import (artifacts, content_cache, conversion, device_export, extraction, files,
                      labels, splits, workers)
from pipeline.errors import PipelineError


def test_outputs_that_are_not_regular_files_are_written_in_place(tmp_path):
    """A FIFO or a link (as /dev/stdout is) is written through, never
    renamed over; a folder is refused with a message."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    files.write_text(fifo, "through the pipe\n")
    assert reader.communicate(timeout=10)[0] == "through the pipe\n"
    assert fifo.exists() and not fifo.is_file()  # still a FIFO
    target = tmp_path / "real.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    files.write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    with pytest.raises(PipelineError, match="is a folder"):
        files.write_text(tmp_path, "x")


def test_predict_csv_to_stdout_keeps_dev_stdout(tmp_path):
    """`--csv=/dev/stdout` prints the table and leaves /dev/stdout a link."""
    before = os.lstat("/dev/stdout")
    result = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path.insert(0, '.'); from pipeline import files; "
        "files.write_csv('/dev/stdout', [['a', 'b'], [1, 2]])")], cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.splitlines() == ["a,b", "1,2"]
    after = os.lstat("/dev/stdout")
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_special_files_among_clips_are_skipped_not_read(tmp_path):
    """A FIFO in a class folder would hang any reader: it is passed over, and
    a manifest row naming /dev/zero is skipped with the reason."""
    folder = make_class_folder(tmp_path / "clips", per_class=4)
    os.mkfifo(folder / "hiss" / "stuck.wav")
    dataset = tmp_path / "ds.npz"
    result = subprocess.run([sys.executable, "make_dataset_16k.py", f"--data_dir={folder}",
                             f"--dataset={dataset}", "--jobs=1"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert ": 8 clips" in result.stdout  # the FIFO is not a clip: passed over, never opened
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,group\n/dev/zero,hiss,z\n" + "".join(
        f"{p},{p.parent.name},{p.stem}\n" for p in sorted(folder.glob("*/*.wav")) if p.is_file()))
    result = subprocess.run([sys.executable, "make_dataset_16k.py", f"--manifest={manifest}",
                             f"--dataset={dataset}", "--jobs=1"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "/dev/zero: not a regular file" in result.stdout


def test_same_audio_under_two_labels_is_refused(tmp_path):
    folder = make_class_folder(tmp_path / "clips", per_class=4)
    (folder / "tone" / "copy.wav").write_bytes((folder / "hiss" / "hiss_0.wav").read_bytes())
    with pytest.raises(PipelineError, match=r"hold the same audio but are labelled 'hiss' and "
                                            r"'tone'"):
        make_dataset_16k.main([f"--data_dir={folder}", f"--dataset={tmp_path / 'ds.npz'}",
                               "--jobs=1"])


def test_tampered_feature_cache_is_not_trusted(tmp_path):
    """Rows of the wrong width in the cache are extracted again, not written
    into the dataset."""
    folder = make_class_folder(tmp_path / "clips", per_class=4)
    dataset = tmp_path / "ds.npz"
    args = [f"--data_dir={folder}", f"--dataset={dataset}", "--jobs=1"]
    make_dataset_16k.main(args)
    expected = artifacts.load_dataset(dataset)["features"]
    cache = extraction.cache_path(dataset)
    with np.load(cache, allow_pickle=False) as npz:
        parts = {k: npz[k] for k in npz.files}
    parts["rows"] = parts["rows"][:, :100]
    files.write_npz(cache, **parts)
    make_dataset_16k.main(args)
    np.testing.assert_array_equal(artifacts.load_dataset(dataset)["features"], expected)


def test_small_classes_split_without_a_traceback(tmp_path):
    """Four clips per class (each its own recording) pass the 3-group check,
    so the splits must work too: fewer splits, not scikit-learn's ValueError."""
    folder = make_class_folder(tmp_path / "clips", per_class=4)
    dataset = tmp_path / "ds.npz"
    make_dataset_16k.main([f"--data_dir={folder}", f"--dataset={dataset}", "--jobs=1"])
    data = artifacts.load_dataset(dataset)
    train, val, test = splits.train_val_test_split(data["labels"], data["groups"],
                                                   test_fraction=0.2, val_fraction=0.2, seed=1)
    assert len(test) and len(val) and len(train)
    assert not set(train) & set(test) and not set(val) & set(test)
    with pytest.raises(PipelineError, match="only one group"):
        splits.grouped_split(np.array([0, 0, 1, 1]), np.array(["a", "a", "b", "c"]), 0.2, 0)


def test_worker_count_never_exceeds_the_tasks():
    assert workers.worker_count(64, 12) == 12
    assert workers.worker_count(-1, 1) == 1
    assert workers.worker_count(-1, 1000) == (os.cpu_count() or 1)
    assert workers.worker_count(2, 1000) == 2


def test_label_files_beyond_the_recording_or_overlapping(tmp_path):
    events = [labels.LabelledEvent(0.0, 2.0, "alarm"), labels.LabelledEvent(1.0, 3.0, "alarm"),
              labels.LabelledEvent(2.5, 4.0, "alarm"), labels.LabelledEvent(1.0, 2.0, "water")]
    merged = labels.merge_overlapping(events)
    assert merged == [labels.LabelledEvent(0.0, 4.0, "alarm"),
                      labels.LabelledEvent(1.0, 2.0, "water")]
    cut = labels.within_recording([labels.LabelledEvent(1.0, 9.0, "alarm")], 5.0,
                                  tmp_path / "rec.wav")
    assert cut == [labels.LabelledEvent(1.0, 5.0, "alarm")]
    with pytest.raises(PipelineError, match=r"rec.txt: a 'alarm' label starts at 6 s, but "
                                            r"rec.wav is only 5.00 s long"):
        labels.within_recording([labels.LabelledEvent(6.0, 7.0, "alarm")], 5.0,
                                tmp_path / "rec.wav")
    with pytest.raises(PipelineError, match="nonexistent: no such folder"):
        labels.recordings_in(tmp_path / "nonexistent")


def test_device_and_fifo_inputs_do_not_hang_the_readers(tmp_path):
    import features
    fifo = tmp_path / "clip.wav"
    os.mkfifo(fifo)
    for read in (lambda p: features.load_audio(p, 16000), features.audio_duration,
                 lambda p: next(features.stream_audio(p, 16000))):
        with pytest.raises(features.FeatureError, match="not a regular file"):
            read(fifo)
    assert content_cache.file_key(fifo) is None and content_cache.file_key("/dev/zero") is None
    write(tmp_path / "ok.wav", tone(440.0, 0.5))
    assert content_cache.file_key(tmp_path / "ok.wav") is not None


def test_train_settings_have_event_ranges(tmp_path):
    with pytest.raises(PipelineError, match=r"--hop_s=3.0: expected a step"):
        train_16k.main([f"--dataset={tmp_path / 'missing.npz'}", "--hop_s=3"])


@pytest.mark.parametrize("option, message", [
    ("--augment_copies=5", r"--augment_copies=5: expected a number in \[0, 4\]"),
    ("--ir_probability=2", r"--ir_probability=2.0: expected a number in \[0, 1\]"),
    ("--epochs=1000000000", r"--epochs=1000000000: expected a number in \[1, 100000\]"),
    ("--ir_dir=/nonexistent/irs", r"--ir_dir=/nonexistent/irs: no such folder"),
])
def test_training_settings_are_bounded(tmp_path, option, message):
    with pytest.raises(PipelineError, match=message):
        train_16k.main([f"--dataset={tmp_path / 'missing.npz'}", option])


def test_label_files_must_be_regular_and_small(tmp_path, monkeypatch):
    fifo = tmp_path / "rec.txt"
    os.mkfifo(fifo)
    with pytest.raises(PipelineError, match="label file is not a regular file"):
        labels.read_audacity_labels(fifo, ["alarm"])
    big = tmp_path / "big.txt"
    big.write_text("0\t1\talarm\n" * 10)
    monkeypatch.setattr(labels, "MAX_LABEL_BYTES", 50)
    with pytest.raises(PipelineError, match="too large for a label file"):
        labels.read_audacity_labels(big, ["alarm"])


def test_model_card_escapes_names_from_the_data():
    """Round three, security: a manifest's free-text source names (and the
    dataset path) reach MODEL_CARD.md as inert text: no new heading, no HTML."""
    from pipeline.model_card import model_card
    evil = "kitchen\n# Free model <script>alert(1)</script> [click](http://x)"
    meta = {"labels": ["alarm", "other"], "events": {"background": ["other"]},
            "feature_config": {"preset": "logmel_stream", "sample_rate": 16000},
            "dataset": {"path": "data/<b>x</b>.npz", "clips": 2, "sources": {evil: 1, "b": 1}},
            "metrics": {"test": {}, "cross_validation": {
                "kind": "source", "pooled": {"macro_f1": 0.5},
                "folds": [{"name": evil, "macro_f1": 0.4}, {"name": "b", "macro_f1": 0.6}]}}}
    card = model_card(meta)
    assert not any(line.startswith("# Free") for line in card.splitlines())
    assert "<script>" not in card and "<b>" not in card and "](http" not in card
    assert "kitchen \\# Free model &lt;script&gt;" in card  # still readable


def test_a_conversion_is_not_recorded_for_a_model_trained_meanwhile(tmp_path, monkeypatch):
    """Round three, security 3: when train_16k.py rewrites the model while
    model_conv.py converts it, the new metadata must not vouch for files
    converted from the old model."""
    import json
    import model_conv
    import train_16k
    from conftest import make_feature_dataset
    from pipeline.errors import PipelineError
    dataset = make_feature_dataset(tmp_path / "ds.npz", preset="seed")
    common = [f"--dataset={dataset}", f"--model_dir={tmp_path / 'm'}",
              f"--report_dir={tmp_path / 'r'}"]
    train_16k.main([*common, "--epochs=3", "--augment=false", "--every_patch=false"])
    export = device_export.export_for_device

    def export_then_retrain(paths, *args, **kwargs):
        export(paths, *args, **kwargs)
        meta = json.loads(paths["meta"].read_text())
        meta["epochs_run"] += 1  # what a retraining writes, at this worst moment
        paths["meta"].write_text(json.dumps(meta))

    monkeypatch.setattr(model_conv, "export_for_device", export_then_retrain)
    with pytest.raises(PipelineError, match="changed while it was being converted"):
        model_conv.main([*common, "--min_agreement=0", "--calibration_tries=1"])
    assert "conversion" not in json.loads((tmp_path / "m" / "model_16k.json").read_text())


@pytest.mark.parametrize("hop", ["1e-9", "0.0005"])
def test_a_hop_under_a_millisecond_is_refused_before_work(tmp_path, hop):
    """Round three, 12: a hop shorter than one sample never advanced."""
    from pipeline.event_settings import default_events
    with pytest.raises(PipelineError, match=r"--hop_s=.*expected a step in \[0.001"):
        train_16k.main([f"--dataset={tmp_path / 'missing.npz'}", f"--hop_s={hop}"])
    with pytest.raises(PipelineError, match="--hop_s"):
        default_events(window_s=2.0, hop_s=float(hop), smooth_windows=3, threshold=0.5,
                       min_event_s=1.0, background="other")


def test_a_nan_poisoned_windows_cache_is_not_trusted(tmp_path):
    """Round three, 15: a views (or copies) cache with NaN rows is computed
    again, not trained on."""
    from pipeline import copies
    path = tmp_path / "c.npz"
    copies.save_cache(path, "ident", {("k", "0", ""): np.ones(4, np.float32)})
    assert copies.load_cache(path, "ident", 4)
    copies.save_cache(path, "ident", {("k", "0", ""): np.full(4, np.nan, np.float32)})
    assert copies.load_cache(path, "ident", 4) == {}


def test_the_model_card_never_describes_the_previous_model(tmp_path, monkeypatch):
    """Round three, 14: after a retrain, and while its conversion fails the
    gate, MODEL_CARD.md describes the new model, not the converted old one."""
    import model_conv
    from conftest import make_feature_dataset
    dataset = make_feature_dataset(tmp_path / "ds.npz", preset="seed")
    common = [f"--dataset={dataset}", f"--model_dir={tmp_path / 'm'}",
              f"--report_dir={tmp_path / 'r'}"]
    train = [*common, "--augment=false", "--every_patch=false"]
    train_16k.main([*train, "--epochs=3"])
    assert model_conv.main([*common, "--min_agreement=0", "--calibration_tries=1"]) == 0
    card = tmp_path / "m" / "MODEL_CARD.md"
    assert "KB of flash" in card.read_text()
    train_16k.main([*train, "--epochs=4", "--seed=7"])
    text = card.read_text()
    assert "not converted yet" in text and "KB of flash" not in text
    compare = conversion.compare
    monkeypatch.setattr(conversion, "compare",  # int8 that disagrees: the gate fails
                        lambda *a, **k: dict(compare(*a, **k), agreement=0.5))
    assert model_conv.main([*common, "--retry_tries=0", "--calibration_tries=1"]) == 1
    assert "not converted yet" in card.read_text()


def test_training_refuses_a_smoothing_the_device_cannot_run(tmp_path):
    """Round three, 13: a device model is refused a moving average wider than
    the C event code keeps, before training (it failed on the device)."""
    from conftest import make_feature_dataset
    dataset = make_feature_dataset(tmp_path / "ds.npz")
    with pytest.raises(PipelineError, match="--smooth_windows=20: the device's event code"):
        train_16k.main([f"--dataset={dataset}", "--smooth_windows=20",
                        f"--model_dir={tmp_path / 'm'}"])


@pytest.mark.parametrize("args", [["--evaluate=a", "--mine=b"], ["--listen=mic", "clip.wav"],
                                  ["--evaluate_events=a", "--evaluate=b"]])
def test_predict_modes_do_not_override_each_other_silently(tmp_path, args):
    import predict
    with pytest.raises(PipelineError, match="give one of them per run"):
        predict.main([f"--model_dir={tmp_path}", *args])
