import pytest

import settings

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
