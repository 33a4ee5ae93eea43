"""Benchmark dataset building against the seed's plain loop.

    python bench/bench_dataset.py DATA_DIR [--preset=logmel_patch]

1. The seed README's method as a plain sequential loop (librosa + noisereduce
   called directly), the baseline, run as its own process like the product
   (so both pay Python start-up and imports); its warm in-process time is
   printed too.
2. make_dataset_16k.py with the seed preset, from scratch with one worker,
   then with all workers.
3. make_dataset_16k.py again with nothing changed (cache hits only), and
   the cost of the cache's content hash of every file on its own.
4. make_dataset_16k.py with PRESET (default: features.FEATURES), all workers.

Each product run is a separate process; the peak resident memory of its whole
process tree (main process + workers) is sampled. Prints clips/s, times real
time, the ratios, and the largest feature difference from the plain loop.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import features  # noqa: E402
from measure import dataset_command, run_measured  # noqa: E402
from pipeline import clips, content_cache, settings  # noqa: E402

PRESET = features.FEATURES     # preset timed in step 4 besides the seed preset
SEED_LOOP_OUT = None           # internal: run only the seed loop and save its features here


def seed_loop(paths):
    """The seed README's steps, one clip after another (noisereduce 3 spelling)."""
    import librosa
    import noisereduce as nr
    out = {}
    for path in paths:
        y, sr = librosa.load(path, sr=16000)
        if y.size == 0 or not y.any():
            continue
        reduced = nr.reduce_noise(y=y, sr=sr, y_noise=y[0:25000], stationary=True)
        trimmed, _ = librosa.effects.trim(reduced, top_db=20, frame_length=512, hop_length=64)
        stft = np.abs(librosa.stft(trimmed, n_fft=512, hop_length=256, win_length=512))
        v = stft.mean(axis=1)
        out[path] = (v - v.min()) / (v.max() - v.min())
    return out


def seed_loop_process(data_dir, out_npz):
    """Child-process mode: run the seed loop and save its features."""
    found, _ = clips.clips_from_folder(data_dir)
    found = seed_loop([c.path for c in found])
    np.savez(out_npz, paths=np.array(list(found), dtype=str),
             features=np.array(list(found.values()), dtype=np.float32))


def main():
    parser = settings.parser_from_constants(globals())
    parser.add_argument("data_dir", help="DATA_DIR/<class>/*.wav")
    cfg = settings.parse_settings(globals(), parser=parser)
    if cfg.seed_loop_out:
        return seed_loop_process(cfg.data_dir, cfg.seed_loop_out)
    data_dir = Path(cfg.data_dir)
    found, _ = clips.clips_from_folder(data_dir)
    paths = [c.path for c in found]
    import soundfile
    audio_s = sum(soundfile.info(p).duration for p in paths)
    print(f"{len(paths)} clips, {audio_s:.0f} s of audio in {data_dir}")

    start = time.perf_counter()
    for path in paths:
        content_cache.file_key(path)
    hash_s = time.perf_counter() - start

    seed_loop(paths[:2])  # warm up imports, so this figure is compute only
    start = time.perf_counter()
    seed_loop(paths)
    warm_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        seed_s, seed_mb = run_measured([sys.executable, __file__, str(data_dir),
                                        f"--seed_loop_out={tmp}/seed.npz"])
        with np.load(f"{tmp}/seed.npz") as npz:
            reference = dict(zip(npz["paths"], npz["features"]))
        base = dataset_command("seed") + [f"--data_dir={data_dir}"]
        one_s, one_mb = run_measured(base + [f"--dataset={tmp}/one.npz", "--jobs=1"])
        all_s, all_mb = run_measured(base + [f"--dataset={tmp}/all.npz", "--jobs=-1"])
        again_s, again_mb = run_measured(base + [f"--dataset={tmp}/all.npz", "--jobs=-1"])
        with np.load(f"{tmp}/all.npz") as npz:
            data = {"features": npz["features"], "paths": [str(p) for p in npz["paths"]]}
        default_s, default_mb = run_measured(dataset_command(cfg.preset) + [
            f"--data_dir={data_dir}", f"--dataset={tmp}/default.npz", "--jobs=-1"])
    diffs = [np.abs(data["features"][i] - reference[p]).max()
             for i, p in enumerate(data["paths"]) if p in reference]

    print(f"\n{'run':<36}{'wall s':>8}{'clips/s':>9}{'x real':>8}{'peak MB':>9}")
    for name, wall, mb in (("seed plain loop, warm, in-process", warm_s, float("nan")),
                           ("seed plain loop, own process", seed_s, seed_mb),
                           ("product, 1 worker, from scratch", one_s, one_mb),
                           ("product, all workers, from scratch", all_s, all_mb),
                           ("product, unchanged re-run", again_s, again_mb),
                           (f"product, {cfg.preset} preset, all workers",
                            default_s, default_mb)):
        print(f"{name:<36}{wall:>8.2f}{len(paths) / wall:>9.1f}{audio_s / wall:>8.0f}{mb:>9.0f}")
    print(f"\nall workers vs seed loop (both own process): {seed_s / all_s:.2f}x (target >= 1.8x)")
    print(f"all workers vs warm in-process seed loop:    {warm_s / all_s:.2f}x")
    print(f"1 worker vs seed loop (both own process):    {seed_s / one_s:.2f}x")
    print(f"unchanged re-run: {100 * again_s / all_s:.1f}% of a full build (target < 5%)")
    print(f"content hash of every file (the cache key): {hash_s:.2f} s = "
          f"{100 * hash_s / one_s:.1f}% of a one-worker build")
    print(f"max |product - seed loop| over {len(diffs)} clips: {max(diffs):.2e} (target <= 1e-5)")
    print(f"peak memory: {max(one_mb, all_mb, again_mb, default_mb):.0f} MB (target < 1024 MB)")


if __name__ == "__main__":
    main()
