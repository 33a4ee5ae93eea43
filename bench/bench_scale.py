"""Benchmark the Dask backend against local processes on the same cores.

    python bench/bench_scale.py [--clips=20000] [--workers=2] [--preset=seed]

Generates one-second synthetic clips in a temporary folder, builds the
dataset with the local backend (--jobs=WORKERS) and with a local Dask cluster
of WORKERS single-threaded workers (--backend=dask), each from scratch in its
own process, and prints clips/s, the client's peak memory and Dask's overhead.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from measure import dataset_command, run_measured  # noqa: E402
from pipeline import settings  # noqa: E402

CLIPS = 20000                  # one-second synthetic clips to generate
WORKERS = 2                    # local processes, and Dask workers
PRESET = "seed"                # feature preset (seed: the costly one that motivates Dask)


def write_corpus(folder, count, seed=0):
    """``count`` one-second clips: tones, noise and chirps in three classes."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    for i in range(count):
        label = ("tone", "noise", "chirp")[i % 3]
        if label == "tone":
            y = np.sin(2 * np.pi * rng.uniform(300, 4000) * t)
        elif label == "noise":
            y = rng.standard_normal(t.size) / 3
        else:
            y = np.sin(2 * np.pi * rng.uniform(200, 2000) * t * (1 + 2 * t))
        y = 0.5 * y + 0.02 * rng.standard_normal(t.size)
        path = Path(folder) / label / f"{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y.astype(np.float32), 16000, subtype="PCM_16")


def main():
    cfg = settings.parse_settings(globals())
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_corpus(Path(tmp) / "clips", cfg.clips)
        print(f"wrote {cfg.clips} one-second clips in {time.perf_counter() - start:.0f} s")
        base = dataset_command(cfg.preset) + [f"--data_dir={tmp}/clips", "--cache=false",
                                               f"--jobs={cfg.workers}"]
        local_s, local_mb = run_measured(base + [f"--dataset={tmp}/local.npz"], whole_tree=False)
        dask_s, dask_mb = run_measured(base + [f"--dataset={tmp}/dask.npz", "--backend=dask"], whole_tree=False)
        with np.load(f"{tmp}/local.npz") as a, np.load(f"{tmp}/dask.npz") as b:
            same = all(np.array_equal(a[k], b[k]) for k in a.files)
    print(f"\nfeature preset: {cfg.preset}")
    print(f"{'backend':<28}{'wall s':>8}{'clips/s':>9}{'client MB':>11}")
    for name, wall, mb in ((f"local, {cfg.workers} processes", local_s, local_mb),
                           (f"dask, {cfg.workers} local workers", dask_s, dask_mb)):
        print(f"{name:<28}{wall:>8.1f}{cfg.clips / wall:>9.1f}{mb:>11.0f}")
    print(f"\nDask overhead vs local: {100 * (dask_s / local_s - 1):+.1f}% (target < 15%)")
    print(f"client peak memory: {max(local_mb, dask_mb):.0f} MB (target < 1024 MB)")
    print(f"datasets identical: {same}")


if __name__ == "__main__":
    main()
