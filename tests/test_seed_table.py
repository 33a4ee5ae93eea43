"""bench/seed_table.py: the mean over seeds of bench_accuracy.py's figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_figures(seed, cv, loso, agreement, per_source):
    """What bench_accuracy.py writes as JSON for one row and one seed."""
    row = {"cv_float": [cv, 0.01], "cv_int8": [cv - 0.01, 0.01], "loso_float": loso,
           "loso_int8": loso, "cv_agreement": agreement, "loso_agreement": 1.0,
           "per_class": {"float": {"alarm": {"f1": cv}, "water": {"f1": loso}}},
           "per_source": per_source}
    return {"seed": seed, "clips": 10, "rows": {"default": row}}


def test_means_over_seeds_and_lowest_agreement(tmp_path):
    runs = [run_figures(1, 0.80, 0.60, 0.99, {"a": 0.5, "b": 1.0}),
            run_figures(2, 0.90, 0.70, 0.97, {"a": 0.7})]
    paths = []
    for run in runs:
        paths.append(tmp_path / f"seed{run['seed']}.json")
        paths[-1].write_text(json.dumps(run))
    out = tmp_path / "seeds.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / "seed_table.py"), *map(str, paths),
                    f"--out={out}"], check=True, capture_output=True)
    row, sources = [line for line in out.read_text().splitlines()
                    if line.startswith("| default")]
    assert "| 1, 2 | 0.850 ± 0.050 | 0.840 ± 0.050 | 0.650 ± 0.050 |" in row
    assert "0.970, 1.000" in row                         # the worse seed's agreement
    assert "alarm 0.85, water 0.65" in row
    assert sources == "| default | 0.60 | 1.00 |"       # b: only one seed has it


def test_one_seed_shows_no_spread(tmp_path):
    path = tmp_path / "seed1.json"
    run = run_figures(1, 0.8, 0.6, 0.99, {})
    del run["rows"]["default"]["loso_int8"]
    path.write_text(json.dumps(run))
    out = tmp_path / "seeds.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / "seed_table.py"), str(path),
                    f"--out={out}"], check=True, capture_output=True)
    row = next(line for line in out.read_text().splitlines() if line.startswith("| default"))
    assert "| 1 | 0.800 | 0.790 | 0.600 | n/a |" in row and "±" not in row


def test_refuses_one_row_and_seed_twice(tmp_path):
    path = tmp_path / "seed1.json"
    path.write_text(json.dumps(run_figures(1, 0.8, 0.6, 0.99, {})))
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "seed_table.py"), str(path),
                             str(path), f"--out={tmp_path / 'x.md'}"], capture_output=True,
                            text=True)
    assert result.returncode != 0 and "measured twice with seed 1" in result.stderr
    assert not (tmp_path / "x.md").exists()


def test_one_seed_may_span_runs_of_different_rows(tmp_path):
    first, second = run_figures(1, 0.8, 0.6, 0.99, {}), run_figures(1, 0.7, 0.5, 0.99, {})
    second["rows"] = {"previous": second["rows"]["default"]}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, run in zip(paths, (first, second)):
        path.write_text(json.dumps(run))
    out = tmp_path / "seeds.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / "seed_table.py"), *map(str, paths),
                    f"--out={out}"], check=True, capture_output=True)
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert any(r.startswith("| previous | 1 | 0.700 |") for r in rows)
