"""bench/seed_table.py: the mean over seeds of bench_accuracy.py's figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_figures(seed, cv, loso, agreement, per_source, row_name="default"):
    """What bench_accuracy.py writes as JSON for one row and one seed."""
    row = {"cv_float": [cv, 0.01], "cv_int8": [cv - 0.01, 0.01], "loso_float": loso,
           "loso_int8": loso, "cv_agreement": agreement, "loso_agreement": 1.0,
           "per_class": {"float": {"alarm": {"f1": cv}, "water": {"f1": loso}}},
           "per_source": per_source}
    return {"seed": seed, "clips": 10, "rows": {row_name: row}}


def seed_table(tmp_path, runs):
    """Write ``runs`` as JSON files, run seed_table.py on them (in that
    order); returns the finished process and the table's path."""
    paths = []
    for k, run in enumerate(runs):
        paths.append(tmp_path / f"run{k}.json")
        paths[-1].write_text(json.dumps(run))
    out = tmp_path / "seeds.md"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "seed_table.py"),
                             *map(str, paths), f"--out={out}"], capture_output=True, text=True)
    return result, out


def table_rows(tmp_path, runs):
    """The table's data lines (row and per-source tables), after a successful run."""
    result, out = seed_table(tmp_path, runs)
    assert result.returncode == 0, result.stderr
    return [line for line in out.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| preset")]


def test_means_over_seeds_and_lowest_agreement(tmp_path):
    row, sources = table_rows(tmp_path, [run_figures(1, 0.80, 0.60, 0.99, {"a": 0.5, "b": 1.0}),
                                         run_figures(2, 0.90, 0.70, 0.97, {"a": 0.7})])
    assert "| 1, 2 | 0.850 ± 0.050 | 0.840 ± 0.050 | 0.650 ± 0.050 |" in row
    assert "0.970, 1.000" in row                         # the worse seed's agreement
    assert "alarm 0.85, water 0.65" in row
    assert sources == "| default | 0.60 | 1.00 |"       # b: only one seed has it
    assert row.endswith("| n/a, n/a |")                 # no run decided clips by windows


def test_figures_with_clips_decided_by_windows(tmp_path):
    runs = [run_figures(1, 0.80, 0.60, 0.99, {}), run_figures(2, 0.90, 0.70, 0.97, {})]
    runs[0]["rows"]["default"]["loso_float_windows"] = 0.64
    runs[1]["rows"]["default"]["loso_float_windows"] = 0.68
    runs[1]["rows"]["default"]["cv_float_windows"] = [0.93, 0.01]
    row, = table_rows(tmp_path, runs)
    assert row.endswith("| 0.930 (1 seed), 0.660 ± 0.020 |")


def test_one_seed_shows_no_spread(tmp_path):
    run = run_figures(1, 0.8, 0.6, 0.99, {})
    del run["rows"]["default"]["loso_int8"]
    row, = table_rows(tmp_path, [run])
    assert "| 1 | 0.800 | 0.790 | 0.600 | n/a |" in row and "±" not in row


def test_cv_and_loso_of_one_seed_may_come_from_two_runs(tmp_path):
    cv = run_figures(1, 0.8, 0.6, 0.99, {})
    loso = run_figures(1, 0.7, 0.5, 0.99, {"a": 0.5})
    for key in ("loso_float", "loso_int8", "loso_agreement"):
        del cv["rows"]["default"][key]
    for key in ("cv_float", "cv_int8", "cv_agreement"):
        del loso["rows"]["default"][key]
    row, sources = table_rows(tmp_path, [cv, loso])
    assert row.startswith("| default | 1 | 0.800 | 0.790 | 0.500 | 0.500 |")
    assert sources == "| default | 0.50 |"


def test_refuses_one_row_and_seed_twice(tmp_path):
    run = run_figures(1, 0.8, 0.6, 0.99, {})
    result, out = seed_table(tmp_path, [run, run])
    assert result.returncode != 0 and "measured twice with seed 1" in result.stderr
    assert not out.exists()


def test_one_seed_may_span_runs_of_different_rows(tmp_path):
    rows = table_rows(tmp_path, [run_figures(1, 0.8, 0.6, 0.99, {}),
                                 run_figures(1, 0.7, 0.5, 0.99, {}, row_name="previous")])
    assert any(r.startswith("| previous | 1 | 0.700 |") for r in rows)
    assert any(r.startswith("| default | 1 | 0.800 |") for r in rows)
