"""Stage 1: turn a folder of labelled clips into the feature dataset.

    python make_dataset_16k.py --demo                       # synthetic demo set
    python make_dataset_16k.py --data_dir=DIR               # DIR/<class>/*.wav
    python make_dataset_16k.py --manifest=clips.csv         # path,label[,group]

Features come from features.py. Unreadable or silent clips are skipped and
listed in <dataset>_skipped.csv; unchanged files are taken from a cache.
"""

import csv
import json
import os
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import artifacts
import features
import settings
from artifacts import PipelineError

DATA_DIR = "data/clips"        # one sub-folder per class; the folder name is the label
MANIFEST = None                # CSV with columns path,label[,group]; used instead of DATA_DIR
DATASET = "data/dataset_16k.npz"  # output dataset file
JOBS = -1                      # worker processes (-1 = all cores, 1 = no extra processes)
BACKEND = "local"              # "local" (processes on this machine) or "dask"
SCHEDULER = None               # Dask scheduler address; none starts a local Dask cluster
CACHE = True                   # reuse features of files whose path, size and mtime are unchanged
DEMO = False                   # write the synthetic demo set to DEMO_DIR and build from it
DEMO_DIR = "data/demo"         # where --demo writes its clips
PLOTS = False                  # save example waveforms and class signatures to REPORT_DIR
REPORT_DIR = "reports"         # folder for figures
BATCH = 2000                   # clips handed to workers at a time (bounds memory on huge folders)
TASK_CLIPS = 16                # clips per parallel task (fewer, larger tasks cost less overhead)


# ----------------------------------------------------------------------------
# Which clips: (path, label, group) from sub-folders or from a manifest.

def clips_from_folder(data_dir):
    """List ``(path, label, group)`` for ``data_dir/<label>/**/<audio file>``.

    Hidden files, non-audio files and files directly in ``data_dir`` are
    ignored; a sub-folder without audio files is reported in the warnings.
    The group of a clip is the file itself.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PipelineError(
            f"{data_dir}: data folder not found. Put one sub-folder of clips per class "
            "there, pass --data_dir=DIR or --manifest=CSV, or run with --demo.")
    clips, warnings = [], []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        files = sorted(p for p in folder.rglob("*") if features.is_audio_file(p))
        if not files:
            warnings.append(f"{folder}: no audio files, so '{folder.name}' is not a class")
        clips += [(str(p), folder.name, str(p)) for p in files]
    return clips, warnings


def clips_from_manifest(manifest):
    """List ``(path, label, group)`` from a CSV with columns path,label[,group].

    Relative paths are taken relative to the manifest's folder.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise PipelineError(f"{manifest}: manifest not found")
    with open(manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise PipelineError(f"{manifest}: manifest needs columns path and label "
                                f"(missing {', '.join(sorted(missing))})")
        clips = []
        for row in reader:
            path = Path(row["path"])
            path = path if path.is_absolute() else manifest.parent / path
            clips.append((str(path), row["label"].strip(), row.get("group") or str(path)))
    return sorted(clips, key=lambda c: (c[1], c[0])), []


# ----------------------------------------------------------------------------
# The cache: features of a file keyed by path, size, mtime and feature config.

def cache_path(dataset):
    dataset = Path(dataset)
    return dataset.with_name(dataset.stem + "_cache.npz")


def file_key(path):
    """'path|size|mtime_ns', or None when the file cannot be stat'ed."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def load_cache(path, config):
    """Dict key -> (vector or None, duration, reason); empty when the cache
    is missing, unreadable or made with another feature configuration."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if json.loads(str(npz["config"])) != config:
                return {}
            rows = zip(npz["keys"], npz["features"], npz["durations"], npz["reasons"])
            return {str(k): (None if r else v, float(d), str(r)) for k, v, d, r in rows}
    except Exception:  # a missing or damaged cache only costs time
        return {}


def save_cache(path, config, entries):
    width = config["n_features"]
    keys = sorted(entries)
    artifacts.write_npz(
        path, config=np.asarray(json.dumps(config, sort_keys=True)),
        keys=np.asarray(keys, dtype=str),
        features=np.stack([entries[k][0] if entries[k][0] is not None
                           else np.zeros(width, np.float32) for k in keys]
                          ) if keys else np.zeros((0, width), np.float32),
        durations=np.asarray([entries[k][1] for k in keys], dtype=np.float64),
        reasons=np.asarray([entries[k][2] for k in keys], dtype=str))


# ----------------------------------------------------------------------------
# Extraction: in parallel, in order, one small result per clip.

@contextmanager
def parallel_backend(backend, scheduler, jobs):
    """joblib's backend for ``backend``; yields the n_jobs to use with it."""
    import joblib
    if backend == "local":
        yield jobs
        return
    if backend != "dask":
        raise PipelineError(f"--backend={backend!r}: expected 'local' or 'dask'")
    import dask_backend
    with dask_backend.client(scheduler, jobs):
        with joblib.parallel_config(backend="dask", wait_for_workers_timeout=60):
            yield -1


def extract_all(paths, config, jobs=JOBS, backend=BACKEND, scheduler=SCHEDULER, cache=None):
    """Features for every path, in order, reusing ``cache`` entries.

    Returns
    -------
    list of (vector or None, duration_s, reason), and the cache for these paths.
    """
    cache = dict(cache or {})
    keys = [file_key(p) for p in paths]
    todo = [i for i, k in enumerate(keys) if k is None or k not in cache]
    results = {}
    if todo:
        import joblib
        from tqdm import tqdm
        with parallel_backend(backend, scheduler, jobs) as n_jobs:
            parallel = joblib.Parallel(n_jobs=n_jobs, return_as="generator",
                                       pre_dispatch="2*n_jobs")
            progress = tqdm(total=len(todo), desc="features", unit="clip", disable=None)
            for start in range(0, len(todo), BATCH):
                batch = todo[start:start + BATCH]
                tasks = [batch[i:i + TASK_CLIPS] for i in range(0, len(batch), TASK_CLIPS)]
                calls = (joblib.delayed(features.extract_many)([paths[i] for i in task], config)
                         for task in tasks)
                for task, task_results in zip(tasks, parallel(calls)):
                    for i, result in zip(task, task_results):
                        results[i] = result
                        if keys[i] is not None:
                            cache[keys[i]] = result
                    progress.update(len(task))
            progress.close()
    ordered = [results[i] if i in results else cache[keys[i]] for i in range(len(paths))]
    # Keep only the files of this run, so the cache forgets deleted and changed files.
    return ordered, {k: cache[k] for k in keys if k is not None}


# ----------------------------------------------------------------------------

def skipped_report_path(dataset):
    dataset = Path(dataset)
    return dataset.with_name(dataset.stem + "_skipped.csv")


def write_skipped_report(path, skipped):
    lines = [["path", "reason"]] + [list(row) for row in skipped]
    with artifacts.atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(lines)


def main(argv=None):
    cfg = settings.parse_settings(globals(), argv)
    started = time.perf_counter()
    if cfg.demo:
        import demo_data
        count = demo_data.write_demo(cfg.demo_dir)
        print(f"wrote {count} synthetic demo clips to {cfg.demo_dir}")
        cfg.data_dir, cfg.manifest = cfg.demo_dir, None

    clips, warnings = (clips_from_manifest(cfg.manifest) if cfg.manifest
                       else clips_from_folder(cfg.data_dir))
    for warning in warnings:
        print(f"warning: {warning}")
    source = cfg.manifest or cfg.data_dir
    if not clips:
        raise PipelineError(f"{source}: no audio files found "
                            f"(looked for {', '.join(features.AUDIO_EXTENSIONS)})")

    config = features.feature_config()
    store = cache_path(cfg.dataset)
    cache = load_cache(store, config) if cfg.cache else {}
    cached_keys = set(cache)
    results, cache = extract_all([c[0] for c in clips], config, cfg.jobs, cfg.backend,
                                 cfg.scheduler, cache)

    kept = [(clip, r) for clip, r in zip(clips, results) if r[0] is not None]
    skipped = [(clip[0], r[2]) for clip, r in zip(clips, results) if r[0] is None]
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    if not kept:
        raise PipelineError(f"{source}: no usable clip left ({len(skipped)} skipped; "
                            "see the reasons above)")
    all_labels = sorted({c[1] for c in clips})
    failed_classes = [lab for lab in all_labels if not any(c[1] == lab for c, _ in kept)]
    if failed_classes:
        raise PipelineError(f"{source}: every audio file of class "
                            f"{', '.join(repr(c) for c in failed_classes)} failed "
                            "(see the reasons above); fix or remove that class")

    label_names = all_labels
    artifacts.save_dataset(
        cfg.dataset,
        np.stack([r[0] for _, r in kept]),
        [label_names.index(c[1]) for c, _ in kept], label_names,
        [c[0] for c, _ in kept], [c[2] for c, _ in kept], config)
    write_skipped_report(skipped_report_path(cfg.dataset), skipped)
    if cfg.cache and set(cache) != cached_keys:
        save_cache(store, config, cache)

    if cfg.plots:
        save_plots(cfg, kept, label_names, config)

    wall = time.perf_counter() - started
    audio_s = sum(r[1] for _, r in kept)
    counts = Counter(c[1] for c, _ in kept)
    print(f"\nwrote {cfg.dataset}: {len(kept)} clips, {config['n_features']} features each")
    for label in label_names:
        print(f"  {label:<12} {counts[label]:>6} clips")
    print(f"skipped {len(skipped)} files (listed in {skipped_report_path(cfg.dataset)})")
    print(f"wall time {wall:.1f} s for {audio_s:.0f} s of audio "
          f"({audio_s / max(wall, 1e-9):.0f}x real time)")
    return 0


def save_plots(cfg, kept, label_names, config):
    """Waveform stages for the first clip of each class, and class signatures."""
    import plots
    report_dir = Path(cfg.report_dir)
    for label in label_names:
        path = next(c[0] for c, _ in kept if c[1] == label)
        plots.waveform_stages(path, report_dir / f"waveform_{label}.png", config)
    data = artifacts.load_dataset(cfg.dataset)
    plots.class_signatures(data["features"], data["labels"], label_names, config,
                           report_dir / "class_signatures.png")
    print(f"saved figures to {report_dir}/")


if __name__ == "__main__":
    artifacts.run_script(main)
