import csv
import os
import subprocess
import sys
import time
import wave

import numpy as np
import pytest

from pipeline import artifacts
import features
import make_dataset_16k as md
from pipeline import extraction
from pipeline.errors import PipelineError
from conftest import ROOT, SR, make_class_folder, noise, tone, write


def build(data_dir, dataset, *extra):
    return md.main([f"--data_dir={data_dir}", f"--dataset={dataset}", "--jobs=1", *extra])


def read_skipped(dataset):
    with open(artifacts.skipped_report_path(dataset), newline="") as fh:
        return {os.path.basename(r["path"]): r["reason"] for r in csv.DictReader(fh)}


@pytest.fixture
def mixed_folder(tmp_path):
    """Every kind of file a real folder holds: good, odd, broken and irrelevant."""
    root = tmp_path / "clips"
    good = root / "alarm"
    write(good / "stereo.wav", np.stack([tone(3000.0), tone(3000.0)], axis=1))
    write(good / "eight_bit.wav", tone(3100.0), subtype="PCM_U8")
    write(good / "rate_8k.wav", tone(2500.0, sr=8000), sr=8000)
    write(good / "rate_44k.wav", tone(3200.0, sr=44100), sr=44100)
    write(good / "rate_48k.wav", tone(3300.0, sr=48000), sr=48000)
    write(good / "clip.flac", tone(2900.0), fmt="FLAC")
    write(good / "clip.ogg", tone(2800.0), subtype="VORBIS", fmt="OGG")
    write(good / "short.wav", tone(3000.0, seconds=0.3))  # shorter than the noise profile
    bad = root / "water"
    write(bad / "ok_1.wav", noise(seed=1, low_hz=1500))
    write(bad / "ok_2.wav", noise(seed=2, low_hz=1500))
    (bad / "empty.wav").write_bytes(b"")
    (bad / "random.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    full = write(tmp_path / "full.wav", noise(seed=3)).read_bytes()
    (bad / "truncated.wav").write_bytes(full[:30])
    with wave.open(str(bad / "zero_length.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SR)
    write(bad / "all_zero.wav", np.zeros(SR, np.float32))
    os.symlink(tmp_path / "gone.wav", bad / "unreadable.wav")  # dangling link
    (bad / ".DS_Store").write_bytes(b"\0\1junk")
    (bad / "notes.txt").write_text("not audio")
    write(root / "no_class.wav", tone(1000.0))
    (root / "empty_class").mkdir()
    (root / "empty_class" / "readme.md").write_text("nothing here")
    return root


def test_mixed_folder(mixed_folder, tmp_path, capsys):
    dataset = tmp_path / "out" / "ds.npz"
    assert build(mixed_folder, dataset) == 0
    data = artifacts.load_dataset(dataset)
    assert data["label_names"] == ["alarm", "water"]
    names = sorted(os.path.basename(p) for p in data["paths"])
    assert names == sorted(["stereo.wav", "eight_bit.wav", "rate_8k.wav", "rate_44k.wav",
                            "rate_48k.wav", "clip.flac", "clip.ogg", "short.wav",
                            "ok_1.wav", "ok_2.wav"])
    assert data["features"].dtype == np.float32
    assert data["features"].shape == (10, features.feature_config().n_features)
    assert np.all(np.isfinite(data["features"]))
    assert data["groups"] == data["paths"]  # without a manifest, each file is its own group
    assert data["feature_config"] == features.feature_config()
    assert data["features"].shape[1] == features.feature_config().n_features
    skipped = read_skipped(dataset)
    assert set(skipped) == {"empty.wav", "random.wav", "truncated.wav", "zero_length.wav",
                            "all_zero.wav", "unreadable.wav"}
    assert "cannot read audio" in skipped["random.wav"]
    assert "zero" in skipped["all_zero.wav"]
    assert all(reason for reason in skipped.values())
    out = capsys.readouterr().out
    assert "empty_class: no audio files" in out and "skipped 6 files" in out


def test_class_whose_files_all_fail_is_named(tmp_path):
    root = make_class_folder(tmp_path / "clips", per_class=2)
    (root / "broken").mkdir()
    (root / "broken" / "a.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(PipelineError, match="class 'broken' failed"):
        build(root, tmp_path / "ds.npz")
    assert not (tmp_path / "ds.npz").exists()


def test_no_usable_clip_and_missing_folder(tmp_path):
    (tmp_path / "clips" / "a").mkdir(parents=True)
    (tmp_path / "clips" / "a" / "x.wav").write_bytes(b"")
    with pytest.raises(PipelineError, match="no usable clip"):
        build(tmp_path / "clips", tmp_path / "ds.npz")
    with pytest.raises(PipelineError, match="data folder not found.*--demo"):
        build(tmp_path / "nowhere", tmp_path / "ds.npz")


def test_manifest_with_groups(tmp_path, easy_folder):
    manifest = tmp_path / "m.csv"
    rows = [("clips/tone/tone_0.wav", "tone", "rec1"), ("clips/tone/tone_1.wav", "tone", "rec1"),
            ("clips/hiss/hiss_0.wav", "hiss", "rec2"), ("clips/hiss/missing.wav", "hiss", "rec3")]
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "group"), *rows])
    dataset = tmp_path / "ds.npz"
    md.main([f"--manifest={manifest}", f"--dataset={dataset}", "--jobs=1"])
    data = artifacts.load_dataset(dataset)
    assert data["label_names"] == ["hiss", "tone"]
    assert data["groups"] == ["rec2", "rec1", "rec1"]
    assert list(read_skipped(dataset)) == ["missing.wav"]


def test_cache_recomputes_only_changed_files(tmp_path, easy_folder, monkeypatch):
    dataset = tmp_path / "ds.npz"
    calls = []
    real = features.extract_or_reason
    monkeypatch.setattr(features, "extract_or_reason",
                        lambda path, *args: calls.append(os.path.basename(path)) or real(path, *args))
    build(easy_folder, dataset)
    first = artifacts.load_dataset(dataset)
    assert len(calls) == 16
    calls.clear()
    build(easy_folder, dataset)
    assert calls == []
    assert np.array_equal(artifacts.load_dataset(dataset)["features"], first["features"])
    write(easy_folder / "tone" / "tone_3.wav", tone(4000.0))  # changed file
    write(easy_folder / "tone" / "tone_new.wav", tone(3900.0))  # added file
    build(easy_folder, dataset)
    assert sorted(calls) == ["tone_3.wav", "tone_new.wav"]
    with np.load(extraction.cache_path(dataset)) as npz:  # the old tone_3 entry is forgotten
        assert len(npz["keys"]) == 17
    calls.clear()
    monkeypatch.setattr(features, "TRIM_TOP_DB", 30)  # new feature configuration
    build(easy_folder, dataset)
    assert len(calls) == 17


def test_parallel_equals_sequential(tmp_path, easy_folder):
    build(easy_folder, tmp_path / "one.npz", "--cache=false")
    md.main([f"--data_dir={easy_folder}", f"--dataset={tmp_path / 'two.npz'}", "--jobs=2",
             "--cache=false"])
    one, two = artifacts.load_dataset(tmp_path / "one.npz"), artifacts.load_dataset(tmp_path / "two.npz")
    assert np.array_equal(one["features"], two["features"]) and one["paths"] == two["paths"]
    assert not (tmp_path / "one_cache.npz").exists()


def test_interrupted_write_keeps_previous_dataset(tmp_path, easy_folder, monkeypatch):
    dataset = tmp_path / "ds.npz"
    build(easy_folder, dataset)
    before = dataset.read_bytes()

    def half_write(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", half_write)
    write(easy_folder / "tone" / "tone_new.wav", tone(3900.0))
    with pytest.raises(KeyboardInterrupt):
        build(easy_folder, dataset)
    assert dataset.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_corrupt_or_foreign_dataset_is_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(PipelineError, match="cannot read dataset"):
        artifacts.load_dataset(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(PipelineError, match="missing features"):
        artifacts.load_dataset(tmp_path / "other.npz")


def read_png(path):
    """RGB pixels of a PNG; fails unless it decodes."""
    import matplotlib.image
    return matplotlib.image.imread(path)[..., :3]


def test_demo_and_plots_and_help(tmp_path, monkeypatch):
    from pipeline import plots
    drawn = {}
    real = plots.class_signatures
    monkeypatch.setattr(plots, "class_signatures",
                        lambda *args, **kwargs: drawn.update(real(*args, **kwargs)) or drawn)
    dataset = tmp_path / "demo.npz"
    md.main(["--demo", f"--demo_dir={tmp_path / 'demo'}", f"--dataset={dataset}",
             "--plots", f"--report_dir={tmp_path / 'reports'}"])
    data = artifacts.load_dataset(dataset)
    assert data["label_names"] == ["alarm", "other", "water"]
    assert np.bincount(data["labels"]).min() >= 20
    # The signature plot drew one mean band profile per class, and it shows
    # the demo's design: "other" (voices, knocks, hum) is loudest in the low
    # bands, water (noise band-passed above 300 Hz) in the upper ones.
    assert set(drawn) == {"alarm", "other", "water"}
    assert np.argmax(drawn["other"]) < 10 < np.argmax(drawn["water"])
    for name in ("class_signatures.png", "waveform_alarm.png", "waveform_other.png",
                 "waveform_water.png"):
        pixels = read_png(tmp_path / "reports" / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # a drawing, not a blank
    help_text = subprocess.run([sys.executable, "make_dataset_16k.py", "--help"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
    for option in ("--data_dir", "--dataset", "--manifest", "--jobs", "--demo", "--backend"):
        assert option in help_text
    assert "data/dataset_16k.npz" in help_text


def test_cli_error_is_one_line_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "make_dataset_16k.py",
                             f"--data_dir={tmp_path / 'nope'}", "--jobs=notanumber"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "expected int" in result.stderr
    result = subprocess.run([sys.executable, "make_dataset_16k.py",
                             f"--data_dir={tmp_path / 'nope'}"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data folder not found" in result.stderr


def test_cache_follows_content_not_timestamps(tmp_path):
    """Two equal-length clips swapped between class folders, timestamps
    restored (as an archive extraction does): the features follow the audio."""
    root = tmp_path / "clips"
    a = write(root / "hiss" / "a.wav", noise(1.0, seed=5, low_hz=1500))
    b = write(root / "tone" / "b.wav", tone(3000.0, 1.0))
    dataset = tmp_path / "ds.npz"
    build(root, dataset)
    stats = {p: os.stat(p) for p in (a, b)}
    swap = tmp_path / "swap.wav"
    os.replace(a, swap), os.replace(b, a), os.replace(swap, b)
    for p in (a, b):
        os.utime(p, ns=(stats[p].st_atime_ns, stats[p].st_mtime_ns))
        assert os.stat(p).st_size == stats[p].st_size
    build(root, dataset)
    build(root, tmp_path / "fresh.npz", "--cache=false")
    cached, fresh = artifacts.load_dataset(dataset), artifacts.load_dataset(tmp_path / "fresh.npz")
    assert cached["paths"] == fresh["paths"]
    assert np.array_equal(cached["features"], fresh["features"])


def test_too_short_too_long_and_out_of_range_clips_are_skipped(tmp_path, monkeypatch):
    root = make_class_folder(tmp_path / "clips", per_class=2)
    write(root / "tone" / "one_sample.wav", np.array([0.5], np.float32))
    write(root / "tone" / "long.wav", tone(3000.0, seconds=3.0))
    write(root / "tone" / "huge.wav", np.full(16000, 1e6, np.float32), subtype="FLOAT")
    decoded = []
    import soundfile
    real = soundfile.read
    monkeypatch.setattr(soundfile, "read", lambda path, *a, **k: decoded.append(
        os.path.basename(str(path))) or real(path, *a, **k))
    dataset = tmp_path / "ds.npz"
    build(root, dataset, "--max_clip_s=2")
    skipped = read_skipped(dataset)
    assert "too short" in skipped["one_sample.wav"]
    assert "3 s long, more than the 2 s" in skipped["long.wav"]
    assert "not audio scaled to [-1, 1]" in skipped["huge.wav"]
    assert "long.wav" not in decoded and "tone_0.wav" in decoded  # refused from its header


def test_leftovers_of_a_killed_write_are_removed(tmp_path, easy_folder):
    dataset = tmp_path / "ds.npz"
    dead = tmp_path / ".ds.999999999.abc.tmp.npz"  # no such process
    dead.write_bytes(b"PK half a zip")
    alive = tmp_path / f".ds.{os.getpid()}.abc.tmp.npz"  # a write in progress
    alive.write_bytes(b"PK")
    build(easy_folder, dataset)
    assert not dead.exists() and alive.exists()


@pytest.mark.parametrize("args, message", [
    (["--jobs=0"], "--jobs=0: expected at least 1, or -1"),
    (["--task_clips=0"], "--task_clips=0: expected at least 1"),
    (["--features=mfcc"], "--features: unknown feature preset 'mfcc'"),
])
def test_bad_settings_are_refused_before_work(tmp_path, easy_folder, args, message):
    with pytest.raises(PipelineError, match=message):
        build(easy_folder, tmp_path / "ds.npz", *args)
    assert not (tmp_path / "ds.npz").exists()


def test_unwritable_output_folder_is_found_before_work(tmp_path, easy_folder, monkeypatch):
    calls = []
    monkeypatch.setattr(features, "extract_many", lambda *a: calls.append(a) or [])
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(PipelineError, match="cannot write there.*--dataset"):
        build(easy_folder, blocker / "ds.npz")
    assert calls == []


def test_features_option_builds_another_preset(tmp_path, easy_folder):
    build(easy_folder, tmp_path / "ds.npz", "--features=logmel")
    data = artifacts.load_dataset(tmp_path / "ds.npz")
    assert data["feature_config"] == features.feature_config("logmel")
    assert data["features"].shape[1] == features.feature_config("logmel").n_features


def start_build_with_workers(tmp_path):
    """make_dataset_16k.py --jobs=2 on enough slow (seed preset) clips to be
    busy for a while; returns the process once its workers are running."""
    import psutil
    root = tmp_path / "clips"
    for i in range(160):
        write(root / ("tone" if i % 2 else "hiss") / f"c{i}.wav", tone(500.0 + i, 3.0, seed=i))
    proc = subprocess.Popen([sys.executable, "make_dataset_16k.py", f"--data_dir={root}",
                             f"--dataset={tmp_path / 'ds.npz'}", "--jobs=2", "--features=seed",
                             "--cache=false"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    parent, deadline = psutil.Process(proc.pid), time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = [p for p in parent.children(recursive=True) if "resource_tracker" not in
                   " ".join(p.cmdline())]
        if len(workers) >= 2:
            time.sleep(3.0)  # let them start extracting (slow to import on a busy machine)
            return proc, parent.children(recursive=True)
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no worker processes appeared")


def wait_gone(processes, seconds):
    import psutil
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    return alive


def test_sigterm_ends_the_run_and_its_workers(tmp_path):
    proc, children = start_build_with_workers(tmp_path)
    proc.terminate()
    assert proc.wait(timeout=30) == 143
    assert "interrupted" in proc.stderr.read()
    assert wait_gone(children, 15) == []
    assert not (tmp_path / "ds.npz").exists()


def test_workers_exit_when_the_run_is_killed(tmp_path):
    proc, children = start_build_with_workers(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    assert wait_gone(children, 15) == []


def test_plot_file_names_stay_in_the_report_folder():
    from pipeline import plots
    assert plots.file_name_part("x/../../tmp/a") == "x_______tmp_a"
    assert plots.file_name_part("water") == "water" and plots.file_name_part("") == "_"
