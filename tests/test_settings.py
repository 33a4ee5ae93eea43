import pytest
from conftest import ROOT

from pipeline import settings

SCRIPT = '''
WINDOW_S = 2.0      # window length in seconds
JOBS = -1           # worker processes
NAME = "x"          # a name
PLOTS = False       # save figures
MANIFEST = None     # optional CSV
LABELS = ("a", "b")
'''


@pytest.fixture
def script_globals(tmp_path):
    import importlib.util
    path = tmp_path / "script.py"
    path.write_text(f'"""demo script"""\n{SCRIPT}')
    spec = importlib.util.spec_from_file_location("demo_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)


def test_defaults_types_and_help(script_globals):
    cfg = settings.parse_settings(script_globals, [])
    assert (cfg.window_s, cfg.jobs, cfg.name, cfg.plots, cfg.manifest) == (2.0, -1, "x", False, None)
    assert not hasattr(cfg, "labels")  # tuples are not settings
    cfg = settings.parse_settings(script_globals, ["--window_s=0.5", "--jobs=3", "--plots",
                                                   "--manifest=m.csv"])
    assert (cfg.window_s, cfg.jobs, cfg.plots, cfg.manifest) == (0.5, 3, True, "m.csv")
    assert settings.parse_settings(script_globals, ["--plots=no"]).plots is False
    assert settings.parse_settings(script_globals, ["--manifest=none"]).manifest is None
    help_text = settings.parser_from_constants(script_globals).format_help()
    assert "window length in seconds (default: 2.0)" in help_text


def test_bad_values_are_rejected(script_globals, capsys):
    with pytest.raises(SystemExit):
        settings.parse_settings(script_globals, ["--jobs=many"])
    assert "expected int, got 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        settings.parse_settings(script_globals, ["--plots=maybe"])
    with pytest.raises(SystemExit):
        settings.parse_settings(script_globals, ["--no_such_setting=1"])


# ----------------------------------------------------------------------------
# Every script: each option it offers is read from the parsed settings, and
# no setting constant is read directly (that would ignore its option).

SCRIPTS = ["make_dataset_16k.py", "train_16k.py", "model_conv.py", "predict.py",
           "calibrate.py", "data/prepare_esc50.py", "bench/bench_device.py",
           "bench/bench_accuracy.py", "bench/bench_sweep.py", "bench/bench_dataset.py",
           "bench/bench_predict.py", "bench/bench_scale.py"]


def script_options(path):
    """The option names (dests) parser_from_constants offers for a script."""
    import importlib.util
    import sys
    sys.path.insert(0, str(path.parent))  # bench/ and data/ scripts import their neighbours
    try:
        spec = importlib.util.spec_from_file_location(f"_settings_probe_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    parser = settings.parser_from_constants(vars(module))
    return {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_option_takes_effect(script):
    import ast

    from conftest import ROOT
    path = ROOT / script
    options = script_options(path)
    assert options, f"{script} offers no options"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # a stage hands its settings to pipeline/ (train_16k.py's to pipeline/training.py)
    shared = [ast.parse(p.read_text(encoding="utf-8")) for p in (ROOT / "pipeline").glob("*.py")]
    read = {node.attr for t in (tree, *shared) for node in ast.walk(t)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "cfg"}
    never_read = sorted(options - read)
    assert not never_read, f"{script}: options parsed but never read: {never_read}"
    constants = {name.upper() for name in options}
    direct = sorted({f"{node.id} (line {node.lineno})" for node in ast.walk(tree)
                     if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
                     and node.id in constants})
    assert not direct, f"{script}: setting constants read directly, ignoring their option: {direct}"


STAGES = SCRIPTS[:5]


@pytest.mark.parametrize("script", STAGES)
def test_no_stage_reads_another_stages_settings(script):
    """``predict.ONSET_TOLERANCE_S`` read from calibrate.py would be a
    setting that calibrate.py's command line cannot change: a qualified read
    of any stage's setting constant fails, as a plain one does."""
    import ast

    from conftest import ROOT
    constants = {name.upper() for stage in STAGES for name in script_options(ROOT / stage)}
    stage_names = {stage.removesuffix(".py") for stage in STAGES}
    tree = ast.parse((ROOT / script).read_text(encoding="utf-8"))
    qualified = sorted(f"{node.value.id}.{node.attr} (line {node.lineno})"
                       for node in ast.walk(tree)
                       if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                       and node.value.id in stage_names and node.attr in constants)
    assert not qualified, f"{script}: reads another stage's settings: {qualified}"


def test_optional_numbers_parse_and_show_their_default(tmp_path):
    """``NAME: float = None`` is a number option that is unset by default
    (e.g. "the model's value"), so --help never shows a default that is not
    the one used."""
    import importlib.util
    path = tmp_path / "script.py"
    path.write_text('"""demo"""\nTHRESHOLD: float = None  # one threshold; default: the model\'s\n'
                    'WINDOWS: int = None  # windows; default: the model\'s\n')
    spec = importlib.util.spec_from_file_location("optional_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = settings.parse_settings(vars(module), [])
    assert cfg.threshold is None and cfg.windows is None
    cfg = settings.parse_settings(vars(module), ["--threshold=0.7", "--windows=3"])
    assert cfg.threshold == 0.7 and cfg.windows == 3 and isinstance(cfg.windows, int)
    assert settings.parse_settings(vars(module), ["--threshold=none"]).threshold is None
    with pytest.raises(SystemExit):
        settings.parse_settings(vars(module), ["--windows=2.5"])
    help_text = settings.parser_from_constants(vars(module)).format_help()
    assert "one threshold; default: the model's (default: None)" in help_text


def test_parse_list():
    assert settings.parse_list("16, 32,,32", int, "cnn_filters") == [16, 32, 32]
    assert settings.parse_list("", int) == []
    from pipeline.errors import PipelineError
    with pytest.raises(PipelineError, match="--cnn_filters='a,b': expected a comma-separated list of ints"):
        settings.parse_list("a,b", int, "cnn_filters")


def test_boolean_flag_never_takes_the_next_word(script_globals):
    parser = settings.parser_from_constants(script_globals)
    parser.add_argument("paths", nargs="*")
    cfg = settings.parse_settings(script_globals, ["--plots", "clip.wav"], parser)
    assert cfg.plots is True and cfg.paths == ["clip.wav"]
    cfg = settings.parse_settings(script_globals, ["--plots=false", "a.wav", "b.wav"], parser)
    assert cfg.plots is False and cfg.paths == ["a.wav", "b.wav"]


def test_check_settings_rules():
    from types import SimpleNamespace

    from pipeline.errors import PipelineError
    cfg = SimpleNamespace(a=0.5, b=0, c=float("nan"))
    settings.check_settings(cfg, a=settings.between(0, 1), b=settings.at_least(0))
    with pytest.raises(PipelineError, match=r"--a=0.5: expected a number in \(0.5, 1\]"):
        settings.check_settings(cfg, a=settings.between(0.5, 1, low_open=True))
    with pytest.raises(PipelineError, match="--c=nan"):
        settings.check_settings(cfg, c=settings.between(0, 1))


def test_a_stages_settings_are_read_without_importing_it(tmp_path):
    """bench/ and tests/ take a stage's settings from its source: literal
    constants only, parsed like the stage's own command line."""
    import sys
    script = tmp_path / "stage_probe.py"
    script.write_text('"""A probe stage."""\nimport numpy as np\nraise SystemExit("imported")\n'
                      'EPOCHS = 10               # passes\nRATE: float = None   # a number\n'
                      'GRID = np.arange(3)       # not a literal\nname = "lower"\n')
    cfg = settings.stage_settings(script, ["--epochs=3", "--rate=0.5"])
    assert vars(cfg) == {"epochs": 3, "rate": 0.5}
    assert "stage_probe" not in sys.modules
    real = settings.stage_settings(ROOT / "train_16k.py", ["--every_patch=false"])
    assert real.every_patch is False and real.hidden_layers == "256,256,128,128"


def test_an_option_is_never_taken_for_a_longer_one(capsys):
    """No argparse prefixes: ``train_16k.py --model=x`` (a name predict.py
    uses for a model file) is an error, not --model_dir=x writing a model
    folder named x."""
    for argv in (["--model=rnn"], ["--model_d=elsewhere"]):
        with pytest.raises(SystemExit):
            settings.stage_settings(ROOT / "train_16k.py", argv)
        assert "unrecognized arguments" in capsys.readouterr().err
    assert settings.stage_settings(ROOT / "train_16k.py", ["--model_dir=m"]).model_dir == "m"

