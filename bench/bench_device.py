"""Time the device front end (device/, C) against features.py on the same windows.

    python bench/bench_device.py [--model_dir=models] [--wav=REC.wav] [--minutes=5]

Builds device/build/features against MODEL_DIR's generated header, cuts a
recording into predict.py's windows (a synthetic one of MINUTES minutes
unless --wav is given), and reports microseconds per window on one core for
both, their ratio, the operation count per window, and the front end's
memory. The operation count is what an estimate for a microcontroller
(e.g. a Cortex-M4F with CMSIS-DSP's arm_rfft_fast_f32) starts from.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import features  # noqa: E402
from pipeline import artifacts, events, settings  # noqa: E402

MODEL_DIR = "models"           # where model_conv.py wrote model_16k_frontend.h
WAV = None                     # a 16 kHz mono 16-bit recording; default: synthetic
MINUTES = 5.0                  # length of the synthetic recording
SEED = 0                       # the synthetic recording's noise
M4 = True                      # also run it on an emulated Cortex-M4F (QEMU), when the tools are there
M4_SECONDS = 10.0              # seconds of the recording the emulated board gets


def synthetic_recording(path, minutes, seed):
    """Noise of varying level with tones and beeps in it, as 16-bit PCM."""
    import soundfile
    rng = np.random.default_rng(seed)
    sr, n = 16000, int(minutes * 60 * 16000)
    t = np.arange(n) / sr
    level = 0.05 + 0.2 * (np.sin(2 * np.pi * t / 37.0) > 0)
    y = level * rng.standard_normal(n) * 0.3 + 0.3 * np.sin(2 * np.pi * 1000 * t) * (
        (t % 11.0) < 2.0)
    soundfile.write(path, np.clip(y, -1, 1).astype(np.float32), sr, subtype="PCM_16")
    return path


def operation_count(config, window_samples, hop_samples):
    """FFTs and multiply-adds of one untrimmed window, or for logmel_stream
    (which computes each frame once, as its samples arrive) of one hop."""
    stream = config.preset == "logmel_stream"
    frames = (hop_samples / config.hop_length if stream
              else 1 + window_samples // config.hop_length)
    mel_weights = 0
    if config.n_mels:
        basis = features.mel_basis(config.sample_rate, config.n_fft, n_mels=config.n_mels,
                                   fmin=config.fmin, fmax=config.fmax)
        first_last = [np.flatnonzero(b) for b in basis]
        mel_weights = sum(int(b[-1] - b[0] + 1) for b in first_last if b.size)
    trim_frames = 1 + window_samples // config.trim_hop_length if config.trim else 0
    energies = (("frame energies", int(frames * config.n_fft)) if stream  # n_fft squares each
                # two passes of a running sum: each frame adds one hop-long block, drops one
                else ("trim frame energies (2 passes)",
                      2 * 2 * trim_frames * config.trim_hop_length))
    macs = {"window (multiply)": int(frames * config.n_fft),
            "power spectrum": int(frames * (config.n_fft // 2 + 1)),
            "mel filterbank": int(frames * mel_weights),
            energies[0]: energies[1],
            "standardise + quantise": config.n_features}
    return ("per 1 s hop (frames computed once)" if stream else "per untrimmed window"), \
        frames, macs


def main():
    cfg = settings.parse_settings(globals())
    model_dir = Path(cfg.model_dir).resolve()
    meta = artifacts.load_model_metadata(model_dir)
    config = meta["feature_config"]
    build = Path(tempfile.mkdtemp(prefix="bench_device_"))
    subprocess.run(["make", "-s", "-C", str(ROOT / "device"), f"MODEL_DIR={model_dir}",
                    f"BUILD_DIR={build}"], check=True)
    tool = build / "features"
    wav = Path(cfg.wav) if cfg.wav else synthetic_recording(build / "rec.wav", cfg.minutes,
                                                            cfg.seed)
    from pipeline.event_settings import event_settings
    ev = event_settings(meta)  # the model's window and hop, as the device header has them
    window, hop = int(ev.window_s * config.sample_rate), int(ev.hop_s * config.sample_rate)

    windows = [w for _, w in events.stream_windows(features.stream_audio(wav, config.sample_rate),
                                                   window, hop, config.window_alignment)]
    features.features_from_audio(windows[0], config)  # imports and caches paid before timing
    start = time.perf_counter()
    for w in windows:
        try:
            features.features_from_audio(w, config)
        except features.FeatureError:
            pass
    python_us = 1e6 * (time.perf_counter() - start) / len(windows)

    c_runs = []
    for _ in range(3):  # best of three: the least disturbed by other processes
        out = subprocess.run([str(tool), "--time", str(wav)], capture_output=True, text=True,
                             check=True).stdout
        c_runs.append(float(out.split(",")[-1].split()[0]))
    c_us = min(c_runs)
    unit, frames, macs = operation_count(config, window, hop)
    memory = subprocess.run([str(tool), "--memory"], capture_output=True, text=True,
                            check=True).stdout
    print(f"recording: {wav} ({len(windows)} windows of {ev.window_s:g} s, hop {ev.hop_s:g} s)")
    print(f"preset: {config.preset}, {config.n_features} features")
    print(f"features.py (Python, one process): {python_us:10.1f} us per window")
    print(f"device front end (C, -O2, one core): {c_us:8.1f} us per window "
          f"(runs: {', '.join(f'{r:.1f}' for r in c_runs)})")
    print(f"speed-up: {python_us / c_us:.1f}x (aim: >= 10x)")
    print(f"\n{unit}: {frames:g} real FFTs of {config.n_fft} points, "
          f"{sum(macs.values()):,} multiply-adds besides the FFTs:")
    for name, count in macs.items():
        print(f"  {name:<42}{count:>12,}")
    print("\nmemory of the front end for this model:\n" + memory, end="")
    if cfg.m4:
        m4_figures(model_dir, build, wav, seconds=cfg.m4_seconds, ev=ev)


def m4_figures(model_dir, build, wav, *, seconds, ev):
    """Instructions per window and per hop, stack, RAM and flash on an
    emulated Cortex-M4F at -O2 (device/m4/, QEMU mps2-an386)."""
    import soundfile
    from pipeline import emulation
    missing = emulation.missing_tools()
    if missing:
        print(f"\nCortex-M4F figures skipped: {', '.join(missing)} not found; "
              f"{emulation.INSTALL}")
        return
    samples, _ = soundfile.read(wav, dtype="int16", frames=int(seconds * 16000))
    board = emulation.run(emulation.build(model_dir, build / "m4"), samples)
    s, sizes = board["summary"], emulation.section_sizes(build / "m4")
    per_window = s["window_instructions"] / max(s["windows"], 1)
    per_hop = per_window + s["push_instructions"] / (s["samples"] / 16000) * ev.hop_s
    print(f"\nCortex-M4F (emulated, -O2, portable FFT), {s['windows']} windows of "
          f"{seconds:g} s of the recording:")
    print(f"  instructions per window: {per_window:,.0f}; per {ev.hop_s:g} s hop (window + "
          f"pushing its samples): {per_hop:,.0f} ({per_hop / 80e6 * 100 / ev.hop_s:.0f} % of an "
          "80 MHz core at one instruction per cycle)")
    print(f"  stack (high-water mark): {s['stack_bytes']:,} B; state: {s['state_bytes']:,} B; "
          f"scratch: {s['scratch_bytes']:,} B")
    print(f"  code: .text {sizes['text']:,} B, .data {sizes['data']:,} B, .bss {sizes['bss']:,} B")
    if board["detector"]:
        detector_figures(model_dir, board, per_hop=per_hop, sizes=sizes, ev=ev)


def network_bytes(model_dir):
    """Flash bytes of the int8 network's constants (weights, biases,
    requantisation) as model_16k_net.h holds them, and its multiply-adds."""
    import json

    from pipeline import c_network
    layers = c_network.network_layers((model_dir / "model_16k_int8.tflite").read_bytes())
    total = sum(np.asarray(layer[key]).size * width for layer in layers
                for key, width in (("weights", 1), ("bias", 4), ("multiplier", 4), ("shift", 4))
                if key in layer)
    meta = json.loads((model_dir / "model_16k.json").read_text())
    return total, meta.get("conversion", {}).get("figures", {}).get("multiply_adds")


def step_multiply_adds(model_dir, first, last):
    """Multiply-adds of layers first..last of the int8 network (convolutions
    and fully connected layers; a fused pooling has none)."""
    from pipeline import c_network
    layers = c_network.network_layers((model_dir / "model_16k_int8.tflite").read_bytes())
    total = 0
    for layer in layers[first:last + 1]:
        out = int(np.prod(layer["out"]))
        if layer["op"] == "CONV_2D":
            total += out * int(np.prod(layer["kernel"])) * layer["in"][2]
        elif layer["op"] == "DEPTHWISE_CONV_2D":
            total += out * int(np.prod(layer["kernel"]))
        elif layer["op"] == "FULLY_CONNECTED":
            total += out * int(np.prod(layer["in"]))
    return total


def detector_figures(model_dir, board, *, per_hop, sizes, ev):
    """The whole detector (front end, network, events) per hop, its RAM and
    flash, ending with the one line scripts read."""
    s, d = board["summary"], board["detector"]
    # one window per hop: the network and the events run once per hop
    network = d["net_instructions"] / max(len(board["network_instructions"]), 1)
    events = d["event_instructions"] / max(len(board["event_instructions"]), 1)
    weights, macs = network_bytes(model_dir)
    n_features = len(next(x for x in board["inputs"] if x is not None))
    ram = (s["state_bytes"] + s["scratch_bytes"] + d["arena_bytes"] + d["event_bytes"]
           + n_features + s["stack_bytes"])
    flash = sizes["text"] + sizes["data"] + weights
    total = per_hop + network + events
    print(f"  network: {network:,.0f} instructions per window"
          + (f" ({network / macs:.1f} per multiply-add, {macs:,} multiply-adds)" if macs else "")
          + f"; arena {d['arena_bytes']:,} B; weights and requantisation {weights:,} B")
    for first, last, spent in board["steps"]:
        step_macs = step_multiply_adds(model_dir, first, last)
        print(f"    layers {first}-{last}: {spent:,} instructions"
              + (f" ({spent / step_macs:.1f} per multiply-add)" if step_macs else ""))
    print(f"  events: {events:,.0f} instructions per window; state {d['event_bytes']:,} B")
    print(f"M4F detector: {total:,.0f} instructions per hop (front end {per_hop:,.0f}, network "
          f"{network:,.0f}, events {events:,.0f}); RAM {ram:,} B; flash {flash:,} B")


if __name__ == "__main__":
    main()
