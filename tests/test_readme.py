"""The README's claims hold: every command it shows names options its
script offers, the table of shared options is exact, the stage numbers
match the scripts, and the audio formats are the ones accepted."""

import functools
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT
from pipeline import clips

README = (ROOT / "README.md").read_text(encoding="utf-8")
STAGES = ["make_dataset_16k.py", "train_16k.py", "model_conv.py", "predict.py", "calibrate.py"]


def readme_commands(text):
    """(script, [options]) of every ``python SCRIPT.py ...`` in a bash block."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.split(r"\s#", line, maxsplit=1)[0]
            for part in re.split(r"&&|;|\|", line):
                words = shlex.split(part)
                if len(words) >= 2 and words[0] == "python" and words[1].endswith(".py"):
                    words = [w.strip("[]") for w in words]  # [--optional=VALUE]
                    options = [w.split("=", 1)[0] for w in words[2:] if w.startswith("--")]
                    found.append((words[1], options))
    return found


@functools.lru_cache(maxsize=None)
def help_options(script):
    """The options ``python SCRIPT --help`` lists."""
    result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"{script} --help failed: {result.stderr[-500:]}"
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_]*)", result.stdout))


COMMANDS = readme_commands(README)


def test_the_readme_has_commands_to_check():
    scripts = {script for script, _ in COMMANDS}
    assert set(STAGES) <= scripts, f"stages without a command in the README: {set(STAGES) - scripts}"


@pytest.mark.parametrize("script", sorted({s for s, _ in COMMANDS}))
def test_every_readme_option_exists(script):
    assert (ROOT / script).is_file(), f"the README runs {script}, which does not exist"
    offered = help_options(script)
    used = {option for s, options in COMMANDS if s == script for option in options}
    unknown = sorted(used - offered)
    assert not unknown, f"the README passes {unknown} to {script}, whose --help lacks them"


def shared_options_table(text):
    """{option: [scripts]} from the README's table of shared options."""
    rows = re.findall(r"^\| `(--[a-z_]+)` \| ([a-z0-9_., ]+\.py) \|$", text, flags=re.M)
    return {option: [s.strip() for s in scripts.split(",")] for option, scripts in rows}


def test_shared_options_table_is_exact():
    """Each shared option is taken by exactly the stages the table names."""
    table = shared_options_table(README)
    assert {"--dataset", "--model_dir", "--report_dir"} <= set(table)
    for option, scripts in table.items():
        takes = [stage for stage in STAGES if option in help_options(stage)]
        assert takes == scripts, f"{option}: the README says {scripts}, the scripts say {takes}"


def test_stage_numbers_match_the_scripts():
    rows = re.findall(r"^\| (\d)\. [a-z ]+ \| `([a-z0-9_]+\.py)` \|", README, flags=re.M)
    assert [script for _, script in rows] == STAGES
    for number, script in rows:
        docstring = (ROOT / script).read_text(encoding="utf-8").split("\n", 1)[0]
        assert docstring.startswith(f'"""Stage {number}:'), (script, docstring)
    assert f"{len(STAGES)} stage scripts" in README.replace("Five", "5")


def test_audio_formats_are_the_accepted_ones():
    claim = re.search(r"with one of the extensions ((?:`\.[a-z0-9]+`,?\s*)+)", README)
    assert claim, "the README no longer lists the accepted audio extensions"
    listed = re.findall(r"`(\.[a-z0-9]+)`", claim.group(1))
    assert sorted(listed) == sorted(clips.AUDIO_EXTENSIONS)


def test_the_command_parser_sees_chained_commands():
    text = "```bash\npython a.py --x=1 && python b.py --y [--w=2]  # c --z\n```\n"
    assert readme_commands(text) == [("a.py", ["--x"]), ("b.py", ["--y", "--w"])]
