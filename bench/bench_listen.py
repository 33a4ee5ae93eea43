"""Benchmark live listening for a whole day: time per hop and memory.

    python bench/bench_listen.py [--model_dir=models] [--hours=24]

Feeds HOURS of audio through predict.py's listener (pipeline.live.Listener,
the model's own windows, features, int8 model, smoothing and events) as fast
as it goes (--listen=FILE --speed=0), then prints per hour: milliseconds per
hop (mean and 99th percentile) and the process's resident memory. The audio
is LOOP_MINUTES of hiss with a tone burst every minute (events to track),
repeated; the listener cannot tell.

The baseline, in the same run: the first hour. A listener that keeps every
window costs more each hour; this one must not. For scale, the line after
the table times what one hop cost before round three (smoothing and finding
events over every window heard so far) after the whole run.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import settings  # noqa: E402

MODEL_DIR = "models"           # trained (train_16k.py) and converted (model_conv.py) model
HOURS = 24.0                   # audio fed through the listener, hours
LOOP_MINUTES = 10.0            # the synthetic recording that is repeated, minutes
BLOCK_S = 0.1                  # block size, as from a microphone


def looped_audio(rate, *, loop_s, hours, block_s):
    """Blocks of hiss with a 3 s tone every 60 s, ``hours`` long in all."""
    rng = np.random.default_rng(0)
    loop = (0.05 * rng.standard_normal(int(loop_s * rate))).astype(np.float32)
    t = np.arange(3 * rate) / rate
    for at in range(20, int(loop_s) - 3, 60):
        loop[at * rate:(at + 3) * rate] += 0.3 * np.sin(2 * np.pi * 2700 * t).astype(np.float32)
    block, total = int(block_s * rate), int(hours * 3600 * rate)
    for fed in range(0, total, block):
        at = fed % len(loop)
        yield loop[at:at + min(block, total - fed, len(loop) - at)]


def resident_mb():
    import psutil
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def main(argv=None):
    cfg = settings.parse_settings(globals(), argv)
    from pipeline.events import find_events, smooth
    from pipeline.inference import Classifier, model_path
    from pipeline.event_settings import event_settings
    from pipeline.live import Listener
    classifier = Classifier(model_path(None, cfg.model_dir))
    events = event_settings(classifier.meta, source=classifier.path)
    rate = classifier.config.sample_rate
    listener = Listener(classifier, events)
    summary, rss = {}, {}  # hour -> (hops, mean ms, p99 ms); hour -> RSS MB at its end
    current = {"hour": 0, "hops": [], "last": time.perf_counter()}

    def close_hour():  # summarised, then forgotten: the benchmark's own memory stays flat
        hops = np.array(current["hops"][1:] or current["hops"]) * 1000  # the first: start-up
        summary[current["hour"]] = (len(hops), hops.mean(), np.percentile(hops, 99))
        rss[current["hour"]] = resident_mb()
        current["hops"] = []

    def on_window(now_s, probs):
        clock = time.perf_counter()
        hour = int(now_s // 3600)
        if hour != current["hour"]:
            close_hour()
            print(f"hour {hour} of {cfg.hours:g} done", file=sys.stderr, flush=True)
            current["hour"] = hour
        current["hops"].append(clock - current["last"])
        current["last"] = clock

    print(f"model {classifier.path} ({classifier.config.preset}); {events.window_s:g} s "
          f"windows every {events.hop_s:g} s; {cfg.hours:g} h of audio at --speed=0")
    started = time.perf_counter()
    listener.run(looped_audio(rate, loop_s=cfg.loop_minutes * 60, hours=cfg.hours,
                              block_s=cfg.block_s), on_window=on_window)
    wall = time.perf_counter() - started
    close_hour()
    print(f"\n{'hour':>5} {'hops':>6} {'ms/hop mean':>12} {'ms/hop p99':>11} {'RSS MB at end':>14}")
    for hour, (hops, mean, p99) in sorted(summary.items()):
        if hops < 10:  # the stream's last few windows, measured after it ended
            continue
        print(f"{hour + 1:>5} {hops:>6} {mean:>12.2f} {p99:>11.2f} {rss[hour]:>14.1f}")
    full = [h for h, row in summary.items() if row[0] >= 0.9 * 3600 / events.hop_s]
    first, final = min(full or summary), max(full or summary)
    ratio = summary[final][1] / summary[first][1]
    print(f"\n{sum(listener.counts.values())} events in {wall / 60:.1f} min "
          f"({cfg.hours * 3600 / wall:.0f}x real time); hour {final + 1} against hour "
          f"{first + 1}: time per hop x{ratio:.2f}, memory {rss[final] - rss[first]:+.1f} MB "
          f"(the first hour fills the {listener.ring.nbytes / 2**20:.0f} MB audio ring)")
    n = int(sum(row[0] + 1 for row in summary.values()))
    probs = np.random.default_rng(1).random((n, len(classifier.labels))).astype(np.float32)
    centres = events.hop_s * np.arange(n)
    clock = time.perf_counter()
    find_events(centres, smooth(probs, events.smooth_windows), classifier.labels,
                events.thresholds, min_duration=events.min_event_s, hop_s=events.hop_s,
                background=events.background)
    print(f"before round three, one hop after {n} windows re-smoothed them all: "
          f"{time.perf_counter() - clock:.2f} s (the hop is {events.hop_s:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
