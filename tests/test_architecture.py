"""The shape of the code: stages stand alone, shared code lives in
pipeline/, and long signatures take their extra arguments by keyword."""

import ast
from pathlib import Path

import pytest

from conftest import ROOT

STAGES = ["make_dataset_16k.py", "train_16k.py", "model_conv.py", "predict.py", "calibrate.py"]
PRODUCT = [*STAGES, "features.py", *sorted(p.relative_to(ROOT).as_posix()
                                           for p in (ROOT / "pipeline").glob("*.py")),
           *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "bench").glob("*.py")),
           *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "data").glob("*.py"))]
MAX_POSITIONAL = 4


def imported_modules(path):
    """Top-level names of every module ``path`` imports, wherever the import stands."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("script", STAGES + sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "pipeline").glob("*.py")))
def test_no_stage_or_helper_imports_a_stage(script):
    """A stage is run, never imported: what two stages share lives in
    pipeline/, so editing one stage's constants cannot change another."""
    stages = {Path(s).stem for s in STAGES}
    imported = imported_modules(ROOT / script) & stages
    assert not imported, f"{script} imports the stage script(s) {sorted(imported)}"


def stage_uses(path):
    """(line, what) of every use of a stage module other than its main():
    ``stage.anything_else`` (also through ``import stage as alias``) or
    ``from stage import anything_else``."""
    stages = {Path(s).stem for s in STAGES}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.asname or alias.name: alias.name for node in ast.walk(tree)
             if isinstance(node, ast.Import) for alias in node.names if alias.name in stages}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in names and node.attr != "main":
            found.append((node.lineno, f"{names[node.value.id]}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in stages:
            found += [(node.lineno, f"from {node.module} import {a.name}")
                      for a in node.names if a.name != "main"]
    return found


@pytest.mark.parametrize("script", sorted(
    p.relative_to(ROOT).as_posix() for folder in ("bench", "tests")
    for p in (ROOT / folder).glob("*.py")))
def test_benchmarks_and_tests_only_run_a_stage(script):
    """bench/ and tests/ may call a stage's main(argv) in-process (faster
    than a subprocess), nothing else of it: what they need of its work lives
    in pipeline/, and its settings come from pipeline.settings.stage_settings."""
    found = stage_uses(ROOT / script)
    assert not found, f"{script} uses stage scripts as libraries: {found}"


def test_the_stage_use_check_sees_attributes_and_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import train_16k\nimport predict\nimport make_dataset_16k as md\n"
                     "from model_conv import convert, main\n"
                     "train_16k.main([])\ntrain_16k.fit(1)\nx = predict.WINDOW_S\n"
                     "md.main([])\nmd.skipped_report_path(1)\n")
    assert sorted(what for _, what in stage_uses(probe)) == \
        ["from model_conv import convert", "make_dataset_16k.skipped_report_path",
         "predict.WINDOW_S", "train_16k.fit"]


def test_the_import_check_sees_every_kind_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import predict\ndef f():\n    from model_conv import convert\n"
                     "    import calibrate as c\n")
    assert imported_modules(probe) >= {"predict", "model_conv", "calibrate"}


def long_positional_signatures(path):
    """(line, name, count) of functions with more than MAX_POSITIONAL
    positional parameters (self and cls not counted)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            positional = [a.arg for a in node.args.posonlyargs + node.args.args
                          if a.arg not in ("self", "cls")]
            if len(positional) > MAX_POSITIONAL:
                found.append((node.lineno, node.name, len(positional)))
    return found


@pytest.mark.parametrize("script", PRODUCT)
def test_long_signatures_are_keyword_only(script):
    """Beyond four parameters, the rest are keyword-only (``*,``), so a call
    names what it passes instead of relying on nine arguments in a row."""
    found = long_positional_signatures(ROOT / script)
    assert not found, f"{script}: functions with more than {MAX_POSITIONAL} positional " \
                      f"parameters: {found}"


def test_the_signature_check_counts_positional_parameters(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def a(p, q, r, s, t): pass\ndef b(p, q, r, s, *, t): pass\n"
                     "class C:\n    def m(self, p, q, r, s): pass\n")
    assert long_positional_signatures(probe) == [(1, "a", 5)]
