"""Shared by the benchmarks: run a command and sample its memory."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_measured(args, whole_tree=True, interval_s=0.05):
    """Run ``args`` in the project root; return (wall seconds, peak RSS in MB).

    With ``whole_tree`` the RSS of the process and all its children (worker
    processes) is summed; otherwise only the process itself (a client) counts.
    """
    import psutil
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
    parent, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [parent] + (parent.children(recursive=True) if whole_tree else [])
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(interval_s)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, args))} failed with status {proc.returncode}")
    return time.perf_counter() - start, peak / 2**20


def dataset_command(preset):
    """``python make_dataset_16k.py --features=PRESET``, for a benchmark
    that compares presets."""
    return [sys.executable, str(ROOT / "make_dataset_16k.py"), f"--features={preset}"]
