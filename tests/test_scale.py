"""The Dask backend: same dataset as local processes, clear faults."""

import os
import threading
import time

import numpy as np
import pytest

from pipeline import artifacts
import make_dataset_16k as md
from pipeline.errors import PipelineError
from conftest import make_class_folder, write

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local_cluster:
        yield local_cluster


@pytest.fixture
def folder_with_bad_files(tmp_path):
    root = make_class_folder(tmp_path / "clips", per_class=6)
    (root / "tone" / "empty.wav").write_bytes(b"")
    (root / "hiss" / "junk.wav").write_bytes(b"RIFF....WAVEjunk")
    write(root / "hiss" / "silent.wav", np.zeros(8000, np.float32))
    return root


def build(folder, dataset, *extra):
    return md.main([f"--data_dir={folder}", f"--dataset={dataset}", "--cache=false", *extra])


def test_dask_dataset_equals_local(cluster, folder_with_bad_files, tmp_path):
    build(folder_with_bad_files, tmp_path / "local.npz", "--jobs=2")
    build(folder_with_bad_files, tmp_path / "dask.npz", "--backend=dask",
          f"--scheduler={cluster.scheduler_address}")
    with np.load(tmp_path / "local.npz") as a, np.load(tmp_path / "dask.npz") as b:
        assert a.files == b.files
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
    local = (tmp_path / "local_skipped.csv").read_bytes()
    assert local == (tmp_path / "dask_skipped.csv").read_bytes()
    assert local.count(b"\n") == 4  # header + 3 bad files


def test_unreachable_scheduler_fails_fast_naming_it(tmp_path, folder_with_bad_files):
    start = time.monotonic()
    with pytest.raises(PipelineError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        build(folder_with_bad_files, tmp_path / "x.npz", "--backend=dask",
              "--scheduler=tcp://127.0.0.1:1")
    assert time.monotonic() - start < 20
    assert not (tmp_path / "x.npz").exists()


def test_killed_worker_leaves_previous_dataset_intact(cluster, tmp_path):
    folder = make_class_folder(tmp_path / "clips", per_class=60, seconds=2.0)
    dataset = tmp_path / "ds.npz"
    build(folder, dataset, "--jobs=1")
    before = artifacts.load_dataset(dataset)
    killed = []

    def kill_a_busy_worker():
        """Wait until a worker is extracting, then kill its process."""
        client = distributed.Client(cluster.scheduler_address)
        pids = client.run(os.getpid)
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                os.kill(pids[busy[0]], 9)
                killed.append(busy[0])
            time.sleep(0.01)
        client.close()

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    try:
        build(folder, dataset, "--backend=dask", f"--scheduler={cluster.scheduler_address}")
    except PipelineError as err:  # the engine may give up instead of retrying
        assert "previous dataset is untouched" in str(err)
    finally:
        killer.join()
    assert killed, "no worker was busy long enough to be killed"
    after = artifacts.load_dataset(dataset)  # never half-written
    assert after["paths"] == before["paths"]
    assert np.array_equal(after["features"], before["features"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
