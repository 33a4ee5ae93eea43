"""Leave-one-source-out of many training settings and seeds, from one packed file.

    python bench/bench_sweep.py DATA_DIR --manifest=CSV --pack=reports/sweep.npz
    python bench/bench_sweep.py --packed=reports/sweep.npz --seeds=42,1,2 \\
        --settings="default=|separable=separable=true;cnn_filters=16,64,128"

Packing (where the audio is) writes one file: the default preset's rows of
every clip, every window and the cached augmented copies, as
bench_accuracy.py computes them, as float16 (half the size). A sweep reads
only that file: no audio, no feature extraction and no TensorFlow (Keras
trains on any backend, e.g. ``KERAS_BACKEND=jax`` on a machine with a GPU
and without TensorFlow).

Every (setting, seed, left-out source) is one task; JOBS processes take
them seed by seed, so a sweep cut short still compares every setting on its
first seeds. Each task trains as train_16k.py does (early stopping and the
open-set rule on a grouped validation split of the other sources) and
decides the left-out clips as predict.py does: the mean of each clip's
calibrated windows, then the rule. Float models only: int8 is
bench_accuracy.py's job. Finished tasks are appended to OUT's ``.jsonl`` as
they end; a sweep run again skips the tasks already there (same settings,
same pack, same backend).
"""

import functools
import importlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import clip_decisions, training  # noqa: E402
from pipeline.errors import run_script  # noqa: E402
from pipeline import evaluation, files, settings, splits  # noqa: E402
from pipeline.quiet import keras_backend  # noqa: E402

MANIFEST = None              # packing: CSV with path,label,group,source
PACK = None                  # packing: write the packed file here
PRESET = None                # packing: feature preset (None: features.py's default)
CACHE_DIR = "reports/cache"  # packing: augmented copies cached here (as bench_accuracy.py does)
PACKED = None                # sweeping: the packed file to read
SETTINGS = "default="        # "name=k=v;k=v|name=k=v": train_16k settings of each row
SEEDS = "42"                 # training seeds (comma-separated), each a full LOSO per row
SOURCES = ""                 # hold out only the sources whose names contain one of these
OUT = "reports/sweep.md"     # the table; its .png the seeds, .json every figure, .jsonl every task
JOBS = -1                    # tasks trained side by side, one process each (-1: one per core)

# Settings that change the cached copies or windows: a pack holds one set of them.
PACKED_SETTINGS = ("augment", "augment_pool", "ir_dir", "ir_probability", "room_probability",
                   "mix_classes", "spec_augment", "every_patch", "window_s", "hop_s")


def parse_rows(text):
    """SETTINGS -> [(name, ["--setting=value", ...])], each checked against
    train_16k.py's settings (SystemExit naming the bad one)."""
    rows = []
    for part in [p.strip() for p in text.split("|") if p.strip()]:
        name, sep, pairs = part.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--settings: {part!r} is not name=k=v;k=v (e.g. default=)")
        flags = settings.key_value_flags(pairs, "--settings")
        packed = [f for f in flags if f[2:].split("=")[0].lower() in PACKED_SETTINGS]
        if packed:
            raise SystemExit(f"--settings: {packed[0][2:]!r} changes the packed copies or "
                             "windows: pack again with it (bench_accuracy.py measures it)")
        train_settings(0, flags)  # refuses unknown settings and bad values now
        rows.append((name.strip(), flags))
    if len({name for name, _ in rows}) != len(rows):
        raise SystemExit("--settings: two rows have the same name")
    return rows


def train_settings(seed, flags):
    """train_16k.py's settings with ``flags``, as its main() would see them."""
    return settings.stage_settings(ROOT / "train_16k.py", [f"--seed={seed}", *flags])


def pack(cfg):
    """Write the packed file (PACK) from DATA_DIR and MANIFEST."""
    import bench_accuracy
    import features
    from pipeline import clips
    found, _ = clips.list_clips(cfg.data_dir, cfg.manifest)
    preset = cfg.preset or features.FEATURES
    rows, config, _ = bench_accuracy.preset_data(found, preset)
    usable = [i for i in range(len(found)) if rows[i].vector is not None]
    names = sorted({found[i].label for i in usable})
    data = bench_accuracy.clip_dataset(found, rows, config, usable=usable, names=names)
    train_cfg = train_settings(0, [])
    train_cfg.dataset = str(Path(cfg.cache_dir) / f"{preset}.npz")
    copies, partner = training.augmentation_pool(data, train_cfg)
    windows, window_of = training.clip_windows(data, train_cfg)
    half = np.float16  # half the size (log-mel rows to about 0.05 dB): a pack travels
    files.write_npz(cfg.pack, features=data["features"].astype(half), labels=data["labels"],
                    label_names=np.array(names), groups=np.array(data["groups"]),
                    sources=np.array(data["sources"]), copies=copies.astype(half),
                    partner=partner, windows=windows.astype(half), window_of=window_of,
                    feature_config=np.asarray(json.dumps(config.to_dict(), sort_keys=True)),
                    made_with=np.asarray(json.dumps(
                        {k: getattr(train_cfg, k) for k in PACKED_SETTINGS}, sort_keys=True)))
    print(f"wrote {cfg.pack}: {len(usable)} clips, {len(windows)} windows, "
          f"{copies.shape[1]} copies each ({Path(cfg.pack).stat().st_size / 2**20:.0f} MiB)")


@functools.lru_cache(maxsize=1)
def unpack(path):
    """The packed file -> (data, pool, windows) as train_16k.fit takes them."""
    import features
    if not Path(path).is_file():
        raise SystemExit(f"{path}: no packed file. Make it where the audio is: python "
                         "bench/bench_sweep.py DATA_DIR --manifest=CSV --pack=FILE")
    with np.load(path, allow_pickle=False) as stored:
        missing = {"features", "copies", "windows", "made_with"} - set(stored.files)
        if missing:
            raise SystemExit(f"{path}: not a bench_sweep.py pack (no {', '.join(sorted(missing))})"
                             "; pack again with --pack")
        data = {"features": stored["features"].astype(np.float32), "labels": stored["labels"],
                "label_names": [str(n) for n in stored["label_names"]],
                "groups": [str(g) for g in stored["groups"]],
                "sources": [str(s) for s in stored["sources"]],
                "feature_config": features.FeatureConfig.from_dict(
                    json.loads(str(stored["feature_config"]))),
                "made_with": json.loads(str(stored["made_with"]))}
        pool = (stored["copies"].astype(np.float32), stored["partner"])
        windows = (stored["windows"].astype(np.float32), stored["window_of"])
    return data, pool, windows


def source_split(data, source, cfg):
    """The LOSO split that leaves out ``source`` (train_16k.py's own)."""
    return next(s for s in splits.evaluation_splits(data, "source", val_fraction=cfg.val_fraction,
                                                    seed=cfg.seed) if s.name == source)


def run_task(k, task):
    """Train one task, (packed file, {row, flags, seed, source, backend}),
    and decide its left-out clips."""
    path, spec = task
    started = time.perf_counter()
    data, pool, windows = unpack(path)
    cfg = train_settings(spec["seed"], spec["flags"])
    split = source_split(data, spec["source"], cfg)
    train, validation = training.recipe_split(cfg, split.train, split.validation)
    model, history, scaling = training.fit(data, train, validation, cfg, pool=pool,
                                           windows=windows, progress_desc="")
    rule = clip_decisions.fit_open_set(model, data, validation, scaling=scaling, cfg=cfg,
                                       windows=windows)
    decided = clip_decisions.predict_rows(model, data, split.test, scaling=scaling, rule=rule,
                                          windows=windows)
    return {**spec, "test": split.test.tolist(),
            "decisions": np.asarray(decided).tolist(), "epochs": len(history["loss"]),
            "seconds": time.perf_counter() - started}


def done_tasks(log):
    """Tasks finished by an earlier sweep into the same ``log``; a line cut
    short (a sweep killed while writing it) is skipped, and trained again."""
    if not Path(log).is_file():
        return []
    done, broken = [], 0
    for line in Path(log).read_text().splitlines():
        try:
            task = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            task = None
            broken += 1
        if isinstance(task, dict):
            done.append(task)
    if broken:
        print(f"note: {broken} unreadable line(s) in {log} (a sweep cut short); their tasks "
              "run again", flush=True)
    return done


def task_key(task):
    """What makes two tasks the same: the pack, row, settings, seed, source
    and backend (a task of another pack swept into the same file is not one
    of this pack's, even with the same names)."""
    return json.dumps([task.get(k) if k != "flags" else list(task[k])
                       for k in ("pack", "row", "flags", "seed", "source", "backend")])


def summary(data, tasks, sources):
    """Per row and seed: pooled macro-F1, per-class F1 and per-source
    macro-F1 of the left-out clips (only seeds with all of ``sources``)."""
    figures = {}
    for (row, seed), mine in group_by(tasks, lambda t: (t["row"], t["seed"])).items():
        if sorted(t["source"] for t in mine) != sorted(sources):
            continue  # an unfinished seed is no LOSO figure
        pooled, tested = np.zeros(len(data["labels"]), int), []
        per_source = {}
        for t in mine:
            pooled[t["test"]] = t["decisions"]
            tested += t["test"]
            per_source[t["source"]] = evaluation.classification_metrics(
                data["labels"][t["test"]], np.array(t["decisions"]),
                data["label_names"])["macro_f1"]
        metrics = evaluation.classification_metrics(data["labels"][tested], pooled[tested],
                                                    data["label_names"])
        figures.setdefault(row, {})[seed] = {
            "macro_f1": metrics["macro_f1"], "per_source": per_source,
            "per_class": {k: v["f1"] for k, v in metrics["per_class"].items()},
            "epochs": float(np.mean([t["epochs"] for t in mine])),
            "task_s": float(np.mean([t["seconds"] for t in mine]))}
    return figures


def group_by(items, key):
    grouped = {}
    for item in items:
        grouped.setdefault(key(item), []).append(item)
    return grouped


def markdown(figures, names, *, backend, made_with):
    """Rows: mean +/- std over seeds of the LOSO macro-F1 and per class;
    then per source."""
    lines = ["| setting | seeds | LOSO macro-F1 | per seed | "
             + " | ".join(f"{n} F1" for n in names) + " | epochs | s per fold |",
             "|" + "---|" * (6 + len(names))]
    for row, by_seed in figures.items():
        seeds = sorted(by_seed, key=str)
        f1 = [by_seed[s]["macro_f1"] for s in seeds]
        per_class = " | ".join(f"{np.mean([by_seed[s]['per_class'][n] for s in seeds]):.2f}"
                               for n in names)
        lines.append(f"| {row} | {', '.join(map(str, seeds))} | {np.mean(f1):.3f} ± "
                     f"{np.std(f1):.3f} | {', '.join(f'{v:.3f}' for v in f1)} | {per_class} | "
                     f"{np.mean([by_seed[s]['epochs'] for s in seeds]):.0f} | "
                     f"{np.mean([by_seed[s]['task_s'] for s in seeds]):.0f} |")
    sources = sorted({s for by_seed in figures.values() for fig in by_seed.values()
                      for s in fig["per_source"]})
    lines += ["", "Macro-F1 of each left-out source, mean over seeds:", "",
              "| setting | " + " | ".join(sources) + " |", "|" + "---|" * (len(sources) + 1)]
    for row, by_seed in figures.items():
        lines.append(f"| {row} | " + " | ".join(
            f"{np.mean([fig['per_source'][s] for fig in by_seed.values()]):.2f}"
            for s in sources) + " |")
    lines.append(f"\nKeras backend: {backend}; clips decided by the mean of their calibrated "
                 "windows and the open-set rule, as predict.py decides them. Copies and windows "
                 "made with " + ", ".join(f"{k}={v}" for k, v in made_with.items()) + ".")
    return "\n".join(lines) + "\n"


def sweep(cfg):
    """Run every task not yet in OUT's .jsonl, then write the table."""
    import joblib
    data, _, _ = unpack(cfg.packed)
    rows = parse_rows(cfg.settings)
    seeds = settings.parse_list(cfg.seeds, int, "seeds")
    sources = splits.chosen_sources(sorted(set(data["sources"])),
                                    settings.parse_list(cfg.sources, str, "sources"))
    backend = keras_backend()
    log = Path(cfg.out).with_suffix(".jsonl")
    pack_id = files.file_sha256(cfg.packed)
    finished = [t for t in done_tasks(log)
                if t.get("backend") == backend and t.get("pack") == pack_id]
    known = {task_key(t) for t in finished}
    wanted = [{"pack": pack_id, "row": name, "flags": flags, "seed": seed, "source": source,
               "backend": backend}
              for seed in seeds for name, flags in rows for source in sources]
    todo = [(str(cfg.packed), w) for w in wanted if task_key(w) not in known]
    print(f"{len(todo)} tasks ({len(rows)} rows x {len(seeds)} seeds x {len(sources)} sources, "
          f"{len(known)} already in {log}), Keras on {backend}", flush=True)
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    # run_task by its module's name, not as __main__'s: each worker then keeps its unpacked file
    runner = importlib.import_module("bench_sweep").run_task
    calls = (joblib.delayed(splits._in_worker)(runner, k, task, os.getpid())
             for k, task in enumerate(todo))
    from pipeline.workers import worker_count
    results = joblib.Parallel(n_jobs=worker_count(cfg.jobs, max(len(todo), 1)),
                              return_as="generator_unordered")(calls) if todo else []
    for n, result in enumerate(results, start=1):
        with open(log, "a") as fh:  # one line per task: a sweep cut short keeps what ended
            fh.write(json.dumps(result) + "\n")
        finished.append(result)
        print(f"[{time.perf_counter() - started:.0f} s] {n}/{len(todo)} {result['row']} seed "
              f"{result['seed']} {result['source']}: {result['epochs']} epochs, "
              f"{result['seconds']:.0f} s", flush=True)
    names = {name for name, _ in rows}
    figures = summary(data, [t for t in finished if t["row"] in names and t["seed"] in seeds
                             and t["source"] in sources], sources)
    table = markdown(figures, data["label_names"], backend=backend, made_with=data["made_with"])
    print("\n" + table)
    files.write_text(cfg.out, f"# Leave-one-source-out sweep of {cfg.packed}\n\n" + table)
    if figures:
        from pipeline import plots
        plots.seed_spread({row: [fig["macro_f1"] for fig in by_seed.values()]
                           for row, by_seed in figures.items()},
                          Path(cfg.out).with_suffix(".png"), baseline=rows[0][0],
                          xlabel="LOSO macro-F1 (bar: mean; dots: seeds)")
    files.write_json(Path(cfg.out).with_suffix(".json"),
                     {"packed": str(cfg.packed), "backend": backend, "rows": figures,
                      "settings": dict(rows)})
    print(f"wrote {cfg.out} and its figures as JSON")


def main():
    parser = settings.parser_from_constants(globals())
    parser.add_argument("data_dir", nargs="?", help="packing: DATA_DIR/<class>/*.wav "
                        "(or the manifest's folder)")
    cfg = settings.parse_settings(globals(), parser=parser)
    if cfg.pack:
        if not cfg.data_dir:
            raise SystemExit("--pack needs DATA_DIR (and --manifest for its sources)")
        return pack(cfg)
    if not cfg.packed:
        raise SystemExit("give --pack=FILE with DATA_DIR (where the audio is), or "
                         "--packed=FILE to sweep")
    return sweep(cfg)


if __name__ == "__main__":
    run_script(main)  # a PipelineError is one line, not a traceback
