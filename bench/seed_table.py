"""Mean over training seeds of bench_accuracy.py runs (one run per seed).

    python bench/bench_accuracy.py DATA --manifest=CSV --seed=1 --out=reports/seed1.md
    python bench/bench_accuracy.py DATA --manifest=CSV --seed=2 --out=reports/seed2.md
    python bench/seed_table.py reports/seed1.json reports/seed2.json [--out=reports/seeds.md]

Each run writes its figures as JSON beside its markdown. Rows are matched by
name (one seed's rows, and one row's CV and LOSO, may come from several
runs). Per row: macro-F1 mean
+/- std over seeds of CV (each seed's mean over folds) and of LOSO (each
seed's pooled figure), float and int8, the lowest int8/float agreement of
any seed, per-class and per-source F1 averaged over seeds, and (runs with
EVERY_PATCH) CV and LOSO with clips decided by their windows. Every cell
says over how many seeds it was averaged when a row lacks a figure in some
runs.
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import files, settings  # noqa: E402

OUT = "reports/accuracy_seeds.md"   # the table over seeds, as markdown

MADE_BY = "python bench/bench_accuracy.py DATA_DIR --seed=N --out=FILE.md"


FIGURES = ("cv_float", "cv_int8", "cv_agreement", "cv_float_windows", "loso_float",
           "loso_int8", "loso_agreement", "loso_float_windows")


def seed_figures(runs, name):
    """{figure: [value per seed that has it]} for the row ``name``."""
    found = {}
    for run in runs:
        row = run["rows"].get(name)
        if row is None:
            continue
        for key in FIGURES:  # CV figures are [mean over folds, std]
            if key in row:
                found.setdefault(key, []).append(row[key][0] if isinstance(row[key], list)
                                                 else row[key])
        for label, scores in row.get("per_class", {}).get("float", {}).items():
            found.setdefault("class " + label, []).append(scores["f1"])
        for source, f1 in row.get("per_source", {}).items():
            found.setdefault("source " + source, []).append(f1)
        found.setdefault("seeds", []).append(run["seed"])
    return found


def merged(runs):
    """One run per seed: a row's figures from several runs of the same seed
    (e.g. its CV in one run, its LOSO in another) are put together; other
    entries (per-class F1, ...) come from the first run that has them (not
    empty). The same figure of a row twice for one seed is refused
    (SystemExit)."""
    by_seed = {}
    for run in runs:
        rows = by_seed.setdefault(run["seed"], {"seed": run["seed"], "rows": {}})["rows"]
        for name, row in run["rows"].items():
            mine = rows.setdefault(name, {})
            twice = [k for k in FIGURES if k in row and k in mine]
            if twice:
                raise SystemExit(f"row {name!r} was measured twice with seed {run['seed']} "
                                 f"({twice[0]}): give each seed of a row once, or the mean "
                                 "counts it twice")
            for key, value in row.items():
                if key not in mine or (not mine[key] and value):  # e.g. per_source of LOSO
                    mine[key] = value
    return list(by_seed.values())


def cell(values, n_seeds, low=False):
    """'0.856 ± 0.012' (the lowest value with ``low``; the value of a single
    seed alone), with '(k seeds)' when some of the row's seeds lack it."""
    if not values:
        return "n/a"
    if low or len(values) == 1:   # one seed has no spread to show
        text = f"{min(values):.3f}"
    else:
        text = f"{np.mean(values):.3f} ± {np.std(values):.3f}"
    if len(values) == n_seeds:
        return text
    return f"{text} ({len(values)} seed{'s' if len(values) > 1 else ''})"


def markdown(runs):
    """The table over seeds, rows in the order they first appear."""
    names = list(dict.fromkeys(name for run in runs for name in run["rows"]))
    figures = {name: seed_figures(runs, name) for name in names}
    lines = ["| preset + model | seeds | CV macro-F1 float | CV int8 | LOSO macro-F1 float "
             "| LOSO int8 | lowest int8/float agreement (CV, LOSO) | per-class F1 (float) "
             "| clips decided by their windows, as predict.py (CV, LOSO) |",
             "|" + "---|" * 9]
    for name in names:
        f, n = figures[name], len(figures[name]["seeds"])
        classes = ", ".join(f"{k[6:]} {np.mean(v):.2f}" for k, v in f.items()
                            if k.startswith("class "))
        lines.append(f"| {name} | {', '.join(map(str, f['seeds']))} "
                     f"| {cell(f.get('cv_float'), n)} | {cell(f.get('cv_int8'), n)} "
                     f"| {cell(f.get('loso_float'), n)} | {cell(f.get('loso_int8'), n)} "
                     f"| {cell(f.get('cv_agreement'), n, low=True)}, "
                     f"{cell(f.get('loso_agreement'), n, low=True)} | {classes} "
                     f"| {cell(f.get('cv_float_windows'), n)}, "
                     f"{cell(f.get('loso_float_windows'), n)} |")
    sources = sorted({k[7:] for f in figures.values() for k in f if k.startswith("source ")})
    if sources:
        lines += ["", "Macro-F1 (float) on each source when it is left out, mean over seeds:", "",
                  "| preset + model | " + " | ".join(sources) + " |",
                  "|" + "---|" * (len(sources) + 1)]
        lines += [f"| {name} | " + " | ".join(
            f"{np.mean(figures[name]['source ' + s]):.2f}" if "source " + s in figures[name]
            else "n/a" for s in sources) + " |" for name in names]
    return "\n".join(lines) + "\n"


def main():
    parser = settings.parser_from_constants(globals())
    parser.add_argument("runs", nargs="+", help="the JSON files bench_accuracy.py wrote")
    cfg = settings.parse_settings(globals(), parser=parser)
    runs = [files.read_json(path, "bench_accuracy.py figures", MADE_BY) for path in cfg.runs]
    runs = merged(runs)
    seeds = list(dict.fromkeys(run["seed"] for run in runs))
    table = markdown(runs)
    print(table)
    files.write_text(cfg.out, f"# Accuracy over seeds {', '.join(map(str, seeds))}\n\n" + table)
    print(f"wrote {cfg.out}")


if __name__ == "__main__":
    main()
