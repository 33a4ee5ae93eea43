"""Benchmark predict.py: start-up latency and throughput.

    python bench/bench_predict.py [--model_dir=models] [DATA_DIR]

1. Time from process start to the first printed result, for the int8 .tflite
   model (LiteRT) and for the Keras model (median of 3 runs each).
2. Throughput on one core for 5 s clips, feature extraction included, in
   times real time. Clips are cut from DATA_DIR's recordings when given
   (looped to 5 s), else synthesised like the demo set.
3. Peak memory and speed of predict.py on long recordings of LONG_MINUTES
   (one minute and three hours by default), which it reads as a stream,
   against the baseline of loading the longest one whole (as predict.py
   did before).
"""

import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import artifacts, settings  # noqa: E402

MODEL_DIR = "models"           # trained (train_16k.py) and converted (model_conv.py) model
CLIPS = 60                     # clips in the throughput run
CLIP_S = 5.0                   # length of each clip, seconds
LONG_MINUTES = "1,180"         # long recordings to stream through predict.py, minutes
WHOLE_FILE = None              # internal: only load this file whole (the memory baseline)
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def first_result_seconds(model, clip):
    """Seconds from starting `python predict.py` to its first line of output."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "predict.py", f"--model={model}", str(clip)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.wait()
    if not line or proc.returncode:
        raise SystemExit(f"predict.py --model={model} failed (status {proc.returncode})")
    return elapsed


def make_clips(folder, data_dir, count, clip_s):
    """``count`` clips of ``clip_s`` seconds written to ``folder``."""
    import soundfile as sf

    import features
    from pipeline import demo_data
    n = int(clip_s * 16000)
    rng = np.random.default_rng(0)
    if data_dir:
        sources = sorted(p for p in Path(data_dir).rglob("*") if p.suffix.lower() == ".wav")
        picks = [sources[i] for i in rng.choice(len(sources), count, replace=False)]
        audio = [np.resize(features.load_audio(p, 16000), n) for p in picks]
    else:
        audio = [np.resize(demo_data.make_clip(demo_data.CLASSES[i % 3], rng), n)
                 for i in range(count)]
    paths = []
    for i, y in enumerate(audio):
        paths.append(Path(folder) / f"clip_{i:03d}.wav")
        sf.write(paths[-1], y, 16000)
    return paths


def classify_on_one_core(model, paths):
    """Seconds classify_file (predict.py's) takes for ``paths`` on CPU core 0 (after
    one warm-up clip), with the model's own event settings."""
    os.sched_setaffinity(0, {0})
    from pipeline.inference import Classifier, classify_file
    from pipeline.event_settings import event_settings
    classifier = Classifier(model)
    events = event_settings(classifier.meta)
    classify_file(classifier, paths[0], events)
    start = time.perf_counter()
    for path in paths:
        classify_file(classifier, path, events)
    return time.perf_counter() - start


def throughput_one_core(model, paths):
    """:func:`classify_on_one_core` in a fresh process whose numeric
    libraries start with one thread (they read these variables at import)."""
    saved = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update({k: "1" for k in _ONE_THREAD})
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(classify_on_one_core, (str(model), [str(p) for p in paths]))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_long_recording(path, minutes, seed=0):
    """A recording of ``minutes``, written a minute at a time: demo-like
    sounds over a quiet noise floor, never held whole in memory."""
    import soundfile as sf

    from pipeline import demo_data
    rng = np.random.default_rng(seed)
    with sf.SoundFile(path, "w", samplerate=16000, channels=1, subtype="PCM_16") as out:
        for _ in range(minutes):
            minute = 0.01 * rng.standard_normal(60 * 16000)
            for start in rng.integers(0, 57 * 16000, size=4):
                clip = demo_data.make_clip(demo_data.CLASSES[rng.integers(3)], rng)
                minute[start:start + clip.size] += clip[:minute.size - start]
            out.write(np.clip(minute, -1, 1).astype(np.float32))


def whole_file_load(path):
    """Baseline, in a process of its own: decode the whole file at once."""
    import features
    features.load_audio(path, 16000)


def long_recordings(model, folder, minutes):
    """(minutes, wall s, peak MB) of predict.py on each recording, and the
    peak MB of loading the longest whole."""
    from measure import run_measured
    rows = []
    for count in minutes:
        path = Path(folder) / f"long_{count}min.wav"
        write_long_recording(path, count)
        wall, peak = run_measured([sys.executable, "predict.py", f"--model={model}", str(path)])
        rows.append((count, wall, peak))
    longest = Path(folder) / f"long_{max(minutes)}min.wav"
    _, baseline = run_measured([sys.executable, __file__, f"--whole_file={longest}"])
    return rows, baseline


def main():
    parser = settings.parser_from_constants(globals())
    parser.add_argument("data_dir", nargs="?", help="cut clips from these recordings")
    cfg = settings.parse_settings(globals(), parser=parser)
    if cfg.whole_file:
        return whole_file_load(cfg.whole_file)
    paths = artifacts.model_paths(cfg.model_dir)
    int8, keras = paths["int8_tflite"], paths["keras"]
    for path in (int8, keras):
        if not path.is_file():
            raise SystemExit(f"{path} not found: run train_16k.py and model_conv.py first")
    minutes = settings.parse_list(cfg.long_minutes, int, "long_minutes")
    with tempfile.TemporaryDirectory() as tmp:
        clips = make_clips(tmp, cfg.data_dir, cfg.clips, cfg.clip_s)
        first_result_seconds(int8, clips[0])  # warm the disk cache
        t_int8 = statistics.median(first_result_seconds(int8, clips[0]) for _ in range(3))
        t_keras = statistics.median(first_result_seconds(keras, clips[0]) for _ in range(3))
        wall = throughput_one_core(int8, clips)
        long_rows, baseline_mb = long_recordings(int8, tmp, minutes) if minutes else ([], 0)
    audio_s = cfg.clip_s * len(clips)
    print(f"model: {cfg.model_dir}; clips: {len(clips)} x {cfg.clip_s:.0f} s "
          f"({'cut from ' + cfg.data_dir if cfg.data_dir else 'synthetic'})")
    print(f"start to first result, int8 TFLite: {t_int8:.2f} s (target < 2 s)")
    print(f"start to first result, Keras:       {t_keras:.2f} s "
          f"({t_keras / t_int8:.1f}x slower; target >= 3x)")
    print(f"throughput, int8, one core, features included: {audio_s / wall:.0f}x real time "
          f"({1000 * wall / len(clips):.1f} ms per {cfg.clip_s:.0f} s clip; target >= 100x)")
    for count, long_wall, peak in long_rows:
        print(f"long recording, {count} min, streamed: peak {peak:.0f} MB (target < 400 MB), "
              f"{60 * count / long_wall:.0f}x real time (target >= 100x for 3 h)")
    if long_rows:
        print(f"baseline: loading the {max(minutes)} min recording whole: peak "
              f"{baseline_mb:.0f} MB")


if __name__ == "__main__":
    main()
