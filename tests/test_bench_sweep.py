"""bench/bench_sweep.py: many settings x seeds of leave-one-source-out from one packed file."""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_class_folder
from pipeline import quiet
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sweep_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # it imports bench_accuracy
    spec = importlib.util.spec_from_file_location("bench_sweep", ROOT / "bench" / "bench_sweep.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_sweep", module)
    spec.loader.exec_module(module)
    return module


def test_a_missing_or_foreign_pack_is_refused(sweep_module, tmp_path):
    with pytest.raises(SystemExit, match="no packed file.*--pack"):
        sweep_module.unpack(str(tmp_path / "none.npz"))
    np.savez(tmp_path / "other.npz", features=np.zeros(3))
    with pytest.raises(SystemExit, match="not a bench_sweep.py pack"):
        sweep_module.unpack(str(tmp_path / "other.npz"))


def test_rows_are_checked_before_any_training(sweep_module):
    rows = sweep_module.parse_rows("default=| wide = cnn_filters=16,32,64; dropout=0.3 |")
    assert rows == [("default", []), ("wide", ["--cnn_filters=16,32,64", "--dropout=0.3"])]
    with pytest.raises(SystemExit, match="changes the packed copies"):
        sweep_module.parse_rows("dir=ir_dir=mics")
    with pytest.raises(SystemExit, match="same name"):
        sweep_module.parse_rows("a=|a=mixup=0.3")
    with pytest.raises(SystemExit, match="not name=k=v"):
        sweep_module.parse_rows("no settings")
    with pytest.raises(SystemExit):
        sweep_module.parse_rows("a=no_such_setting=1")


def three_sources(tmp_path):
    """Two classes, six clips each, dealt to three sources (one group per clip)."""
    folder = make_class_folder(tmp_path / "clips", per_class=6, classes=("hiss", "tone"))
    manifest = tmp_path / "manifest.csv"
    rows = [(f"clips/{label}/{label}_{i}.wav", label, f"{label}{i}", f"src{i % 3}")
            for label in ("hiss", "tone") for i in range(6)]
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "group", "source"), *rows])
    return folder, manifest


def test_pack_then_sweep_on_the_generator_path(sweep_module, tmp_path, monkeypatch):
    """A packed file holds every clip, window and copy; a sweep trains every
    (row, seed, source) on Keras' generator path (as on a backend other than
    TensorFlow), pools the left-out clips, and a second run trains nothing."""
    folder, manifest = three_sources(tmp_path)
    monkeypatch.chdir(tmp_path)
    packed = tmp_path / "pack.npz"
    monkeypatch.setattr(sys, "argv", ["bench_sweep.py", str(folder), f"--manifest={manifest}",
                                      f"--pack={packed}", "--cache_dir=cache"])
    sweep_module.main()
    data, (copies, partner), (windows, window_of) = sweep_module.unpack(str(packed))
    assert len(data["labels"]) == 12 and sorted(set(data["sources"])) == ["src0", "src1", "src2"]
    assert copies.shape[:2] == partner.shape and copies.dtype == np.float32
    assert set(window_of) == set(range(12)) and windows.shape[1] == data["features"].shape[1]
    assert data["made_with"]["augment_pool"] == copies.shape[1]  # what made the copies travels

    monkeypatch.setattr(quiet, "keras_backend", lambda: "generator")  # NumPy batches, weights
    monkeypatch.setattr(sweep_module, "keras_backend", lambda: "generator")
    out = tmp_path / "sweep.md"
    argv = ["bench_sweep.py", f"--packed={packed}", f"--out={out}", "--jobs=1", "--seeds=3",
            "--settings=tiny=epochs=2;cnn_filters=4,4"]
    monkeypatch.setattr(sys, "argv", argv)
    sweep_module.main()
    tasks = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert sorted((t["row"], t["source"]) for t in tasks) == [
        ("tiny", f"src{k}") for k in range(3)]
    assert all(t["backend"] == "generator" and 1 <= t["epochs"] <= 2 for t in tasks)
    tested = sorted(i for t in tasks if t["row"] == "tiny" for i in t["test"])
    assert tested == list(range(12))  # each clip left out once
    figures = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert set(figures) == {"tiny"} and 0 <= figures["tiny"]["3"]["macro_f1"] <= 1
    assert set(figures["tiny"]["3"]["per_source"]) == {"src0", "src1", "src2"}
    assert "| tiny | 3 |" in out.read_text()
    assert out.with_suffix(".png").stat().st_size > 0

    before = out.with_suffix(".jsonl").read_text()
    sweep_module.main()  # every task is done: nothing trains again
    assert out.with_suffix(".jsonl").read_text() == before


def test_sources_screen_keeps_matching_names_and_refuses_none():
    from pipeline import splits
    names = ["UrbanSound8K", "jt-uiowa", "kitchen20"]
    assert splits.chosen_sources(names, []) == names
    assert splits.chosen_sources(names, ["uiowa", "kitchen"]) == ["jt-uiowa", "kitchen20"]
    with pytest.raises(PipelineError, match="no source name contains any of rain"):
        splits.chosen_sources(names, ["rain"])


def test_finished_tasks_are_this_packs_and_survive_a_cut_line(sweep_module, tmp_path, capsys):
    """Round three, 16: a task of another pack swept into the same output is
    not reused (its figures appeared under the second pack's title), and one
    truncated line no longer breaks every later sweep."""
    task = {"pack": "aaa", "row": "r", "flags": ["--x=1"], "seed": 1, "source": "s",
            "backend": "tensorflow"}
    other = dict(task, pack="bbb")
    assert sweep_module.task_key(task) != sweep_module.task_key(other)
    assert sweep_module.task_key(task) == sweep_module.task_key(dict(task, flags=("--x=1",)))
    log = tmp_path / "sweep.jsonl"
    log.write_text(json.dumps(task) + "\n" + json.dumps(other)[:25] + "\n")
    assert sweep_module.done_tasks(log) == [task]
    assert "1 unreadable line(s)" in capsys.readouterr().out
