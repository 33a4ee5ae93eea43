"""Benchmark predict.py: start-up latency and throughput.

    python bench/bench_predict.py [--model_dir=models] [DATA_DIR]

1. Time from process start to the first printed result, for the int8 .tflite
   model (LiteRT) and for the Keras model (median of 3 runs each).
2. Throughput on one core for 5 s clips, feature extraction included, in
   times real time. Clips are cut from DATA_DIR's recordings when given
   (looped to 5 s), else synthesised like the demo set.
"""

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

CLIPS = 60
CLIP_S = 5.0


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


def make_clips(folder, data_dir):
    import soundfile as sf

    import demo_data
    import features
    n = int(CLIP_S * 16000)
    rng = np.random.default_rng(0)
    if data_dir:
        sources = sorted(p for p in Path(data_dir).rglob("*") if p.suffix.lower() == ".wav")
        picks = [sources[i] for i in rng.choice(len(sources), CLIPS, replace=False)]
        audio = [np.resize(features.load_audio(p), n) for p in picks]
    else:
        audio = [np.resize(demo_data.make_clip(demo_data.CLASSES[i % 3], rng), n)
                 for i in range(CLIPS)]
    paths = []
    for i, y in enumerate(audio):
        paths.append(Path(folder) / f"clip_{i:03d}.wav")
        sf.write(paths[-1], y, 16000)
    return paths


def throughput_one_core(model, paths):
    """Clips through predict.classify_file in a process pinned to one core."""
    code = f"""
import os, sys, time, types
os.sched_setaffinity(0, {{0}})
sys.path.insert(0, {str(ROOT)!r})
import predict
clf = predict.Classifier({str(model)!r})
cfg = types.SimpleNamespace(window_s=predict.WINDOW_S, hop_s=predict.HOP_S,
                            smooth_windows=predict.SMOOTH_WINDOWS, min_event_s=predict.MIN_EVENT_S)
th = predict.parse_thresholds("", clf.labels, predict.THRESHOLD)
paths = {[str(p) for p in paths]!r}
predict.classify_file(clf, paths[0], cfg, th, {{"other"}})
start = time.perf_counter()
for p in paths:
    predict.classify_file(clf, p, cfg, th, {{"other"}})
print(time.perf_counter() - start)
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--model_dir=")]
    model_dir = Path(next((a.split("=", 1)[1] for a in sys.argv[1:]
                           if a.startswith("--model_dir=")), "models"))
    data_dir = args[0] if args else None
    int8, keras = model_dir / "model_16k_int8.tflite", model_dir / "model_16k.keras"
    for path in (int8, keras):
        if not path.is_file():
            raise SystemExit(f"{path} not found: run train_16k.py and model_conv.py first")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_clips(tmp, data_dir)
        first_result_seconds(int8, paths[0])  # warm the disk cache
        t_int8 = statistics.median(first_result_seconds(int8, paths[0]) for _ in range(3))
        t_keras = statistics.median(first_result_seconds(keras, paths[0]) for _ in range(3))
        wall = throughput_one_core(int8, paths)
    audio_s = CLIP_S * len(paths)
    print(f"model: {model_dir}; clips: {len(paths)} x {CLIP_S:.0f} s "
          f"({'cut from ' + data_dir if data_dir else 'synthetic'})")
    print(f"start to first result, int8 TFLite: {t_int8:.2f} s (target < 2 s)")
    print(f"start to first result, Keras:       {t_keras:.2f} s "
          f"({t_keras / t_int8:.1f}x slower; target >= 3x)")
    print(f"throughput, int8, one core, features included: {audio_s / wall:.0f}x real time "
          f"({1000 * wall / len(paths):.1f} ms per {CLIP_S:.0f} s clip; target >= 100x)")


if __name__ == "__main__":
    main()
