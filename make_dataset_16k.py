"""Stage 1: turn a folder of labelled clips into the feature dataset.

    python make_dataset_16k.py --demo                       # synthetic demo set
    python make_dataset_16k.py --data_dir=DIR               # DIR/<class>/*.wav
    python make_dataset_16k.py --manifest=clips.csv         # path,label[,group]
    python make_dataset_16k.py --features=logmel            # try another preset

Features come from features.py. Unreadable or silent clips are skipped and
listed in <dataset>_skipped.csv; unchanged files are taken from a cache.
"""

import time
from collections import Counter
from pathlib import Path

import numpy as np

import features
from pipeline import artifacts, clips, content_cache, extraction, files, settings
from pipeline.errors import PipelineError, run_script

DATA_DIR = "data/clips"        # one sub-folder per class; the folder name is the label
MANIFEST = None                # CSV with columns path,label[,group][,source]; instead of DATA_DIR
DATASET = "data/dataset_16k.npz"  # output dataset file
FEATURES = features.FEATURES   # feature preset: "seed", "logmel", "logmel_patch", "logmel_stream" or
                               # "efficientat" (features.py; the default is its FEATURES)
JOBS = -1                      # worker processes (-1 = all cores, 1 = no extra processes)
TASK_CLIPS = 16                # clips per parallel task (fewer, larger tasks cost less overhead)
MAX_CLIP_S = 60.0              # longer files are skipped unread (cut long recordings into clips)
BACKEND = "local"              # "local" (processes on this machine) or "dask"
SCHEDULER = None               # Dask scheduler address; none starts a local Dask cluster
CACHE = True                   # reuse features of files whose content is unchanged
DEMO = False                   # write the synthetic demo set to DEMO_DIR and build from it
DEMO_DIR = "data/demo"         # where --demo writes its clips
PLOTS = False                  # save example waveforms and class signatures to REPORT_DIR
REPORT_DIR = "reports"         # folder for figures


def list_clips(cfg):
    """The clips to use (writing the demo set first with --demo)."""
    data_dir, manifest = cfg.data_dir, cfg.manifest
    if cfg.demo:
        from pipeline import demo_data
        count = demo_data.write_demo(cfg.demo_dir)
        print(f"wrote {count} synthetic demo clips to {cfg.demo_dir}")
        data_dir, manifest = cfg.demo_dir, None
    found, warnings = clips.list_clips(data_dir, manifest)
    for warning in warnings:
        print(f"warning: {warning}")
    source = manifest or data_dir
    if not found:
        raise PipelineError(f"{source}: no audio files found "
                            f"(looked for {', '.join(clips.AUDIO_EXTENSIONS)})")
    return found, source


def check_one_label_per_audio(found):
    """Refuse the same audio (by content) under two labels: one of them is
    wrong, and the model would learn both. Returns each clip's content key
    (for the feature cache, so each file is hashed once)."""
    first_of, keys = {}, [content_cache.file_key(clip.path) for clip in found]
    for clip, key in zip(found, keys):
        first = first_of.setdefault(key, clip) if key else clip
        if first.label != clip.label:
            raise PipelineError(f"{first.path} and {clip.path} hold the same audio but are "
                                f"labelled {first.label!r} and {clip.label!r}: remove one, or "
                                "fix its label")
    return keys


def extract(found, config, cfg, keys):
    """One Extracted per clip, through the cache when it is on (``keys``:
    the clips' content keys)."""
    store = extraction.cache_path(cfg.dataset)
    cache = extraction.load_cache(store, config, cfg.max_clip_s) if cfg.cache else {}
    results, new_cache = extraction.extract_all(
        [c.path for c in found], config, jobs=cfg.jobs, backend=cfg.backend,
        scheduler=cfg.scheduler, cache=cache, task_clips=cfg.task_clips,
        max_seconds=cfg.max_clip_s, keys=keys)
    if cfg.cache and set(new_cache) != set(cache):
        extraction.save_cache(store, config, new_cache, cfg.max_clip_s)
    return results


def keep_usable(found, results, source):
    """(clip, Extracted) pairs with features, and (path, reason) of the rest;
    an error when nothing, or nothing of some class, is left."""
    kept = [(clip, r) for clip, r in zip(found, results) if r.vector is not None]
    skipped = [(clip.path, r.reason) for clip, r in zip(found, results) if r.vector is None]
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    if not kept:
        raise PipelineError(f"{source}: no usable clip left ({len(skipped)} skipped; "
                            "see the reasons above)")
    failed = sorted({c.label for c in found} - {c.label for c, _ in kept})
    if failed:
        raise PipelineError(f"{source}: every audio file of class "
                            f"{', '.join(repr(c) for c in failed)} failed "
                            "(see the reasons above); fix or remove that class")
    return kept, skipped


def save_plots(report_dir, dataset, kept, *, label_names, config):
    """Waveform stages for the first clip of each class, and class signatures."""
    from pipeline import plots
    report_dir = Path(report_dir)
    for label in label_names:
        path = next(c.path for c, _ in kept if c.label == label)
        plots.waveform_stages(path, report_dir / f"waveform_{plots.file_name_part(label)}.png",
                              config)
    data = artifacts.load_dataset(dataset)
    plots.class_signatures(data["features"], data["labels"], label_names, config=config,
                           out_png=report_dir / "class_signatures.png")
    print(f"saved figures to {report_dir}/")


def print_summary(dataset, kept, skipped, *, label_names, config, wall):
    audio_s = sum(r.duration_s for _, r in kept)
    counts = Counter(c.label for c, _ in kept)
    print(f"\nwrote {dataset}: {len(kept)} clips, {config.n_features} "
          f"{config.preset} features each")
    for label in label_names:
        print(f"  {label:<12} {counts[label]:>6} clips")
    print(f"skipped {len(skipped)} files (listed in {artifacts.skipped_report_path(dataset)})")
    print(f"wall time {wall:.1f} s for {audio_s:.0f} s of audio "
          f"({audio_s / max(wall, 1e-9):.0f}x real time)")


def check_outputs(cfg):
    """Settings in range and output folders writable, before any work; and
    the leftovers of an earlier run that was killed while writing, removed."""
    settings.check_settings(cfg, jobs=settings.JOBS_RULE, task_clips=settings.at_least(1),
                            max_clip_s=(lambda v: v > features.MIN_CLIP_S,
                                        f"more than {features.MIN_CLIP_S} s"))
    files.check_writable("--dataset", Path(cfg.dataset).parent)
    if cfg.plots:
        files.check_writable("--report_dir", cfg.report_dir)
    for output in (cfg.dataset, extraction.cache_path(cfg.dataset),
                   artifacts.skipped_report_path(cfg.dataset)):
        files.remove_stale_temporaries(output)


def main(argv=None):
    cfg = settings.parse_settings(globals(), argv)
    started = time.perf_counter()
    try:
        config = features.feature_config(cfg.features)
    except ValueError as err:
        raise PipelineError(f"--features: {err}") from None
    check_outputs(cfg)
    found, source = list_clips(cfg)
    keys = check_one_label_per_audio(found)
    results = extract(found, config, cfg, keys)
    kept, skipped = keep_usable(found, results, source)

    label_names = sorted({c.label for c in found})
    artifacts.save_dataset(
        cfg.dataset, np.stack([r.vector for _, r in kept]),
        [label_names.index(c.label) for c, _ in kept], label_names=label_names,
        paths=[c.path for c, _ in kept], groups=[c.group for c, _ in kept], config=config,
        sources=[c.source for c, _ in kept])
    files.write_csv(artifacts.skipped_report_path(cfg.dataset), [("path", "reason"), *skipped])
    if cfg.plots:
        save_plots(cfg.report_dir, cfg.dataset, kept, label_names=label_names, config=config)
    print_summary(cfg.dataset, kept, skipped, label_names=label_names, config=config,
                  wall=time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    run_script(main)
