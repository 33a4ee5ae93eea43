"""Command-line settings: overrides for the constants at the top of each script.

Every script keeps its settings as plain upper-case constants with a short
comment, nanoGPT style. ``parser_from_constants`` turns each of them into an
``--lower_case_name=value`` option whose help text is that comment, so
``python train_16k.py --epochs=50`` works and ``--help`` lists every setting
with its default. Values are converted to the constant's own type. Only the settings object
is read after parsing: a constant read directly would ignore its option
(tests/test_settings.py checks every script for that).
"""

import argparse
import re
from pathlib import Path
from types import SimpleNamespace

from pipeline.errors import PipelineError

_SIMPLE_TYPES = (bool, int, float, str, type(None))
# NAME = value  # comment, or NAME: float = None  # comment (a number, unset by default)
_CONSTANT_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]*)?=.*?#\s*(.+)$")
_NUMBER_TYPES = {"int": int, "float": float}


_SECTION_LINE = re.compile(r"^# --- (.+?) ---\s*$")  # a group of settings, in --help too


def _comments(source_file):
    """Map NAME -> (comment, section) for ``NAME = value  # comment`` lines:
    the comment with its continuation lines (indented lines holding only a
    comment, right below), and the title of the ``# --- Title ---`` line
    above it (None before the first)."""
    found, name, section = {}, None, None
    for line in Path(source_file).read_text(encoding="utf-8").splitlines():
        match, header = _CONSTANT_LINE.match(line), _SECTION_LINE.match(line)
        if header:
            section, name = header.group(1), None
        elif match:
            name = match.group(1)
            found[name] = (match.group(2).strip(), section)
        elif name and line.startswith(" ") and line.strip().startswith("#"):
            text, where = found[name]
            found[name] = (f"{text} {line.strip()[1:].strip()}", where)
        else:
            name = None
    return found


def _parse_bool(text):
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(default, annotation=None):
    """The argparse ``type`` that turns text into a value like ``default``
    (for a None default annotated ``int`` or ``float``: that number, or
    "none")."""
    kind = _NUMBER_TYPES.get(getattr(annotation, "__name__", annotation))
    if default is None and kind is not None:
        def optional_number(text):
            if text.strip().lower() == "none":
                return None
            try:
                return kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {kind.__name__} or none, got {text!r}") from None
        return optional_number
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, (int, float)):
        kind = type(default)

        def number(text):
            try:
                return kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {kind.__name__}, got {text!r}") from None
        return number
    # str or None: "none" means None, so an optional path can be cleared.
    return lambda text: None if text.lower() == "none" else text


def parser_from_constants(module_globals, description=None):
    """Build an ArgumentParser with one option per upper-case constant.

    Parameters
    ----------
    module_globals : dict
        ``globals()`` of the calling script. Upper-case names bound to a
        bool, int, float, str or None become options; anything else (tuples,
        dicts, functions) is left alone.
    description : str, optional
        Shown at the top of ``--help``; defaults to the script's docstring.

    Returns
    -------
    argparse.ArgumentParser
        Callers may add positional arguments before calling
        :func:`parse_settings`.
    """
    comments = _comments(module_globals["__file__"])
    annotations = module_globals.get("__annotations__", {})
    parser = argparse.ArgumentParser(
        description=description or module_globals.get("__doc__"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # no prefixes: train_16k.py --model=x would silently be --model_dir=x
        allow_abbrev=False,
    )
    groups = {}
    for name, default in module_globals.items():
        if not (name.isupper() and not name.startswith("_")):
            continue
        if not isinstance(default, _SIMPLE_TYPES):
            continue
        option = "--" + name.lower()
        comment, section = comments.get(name, ("", None))
        help_text = f"{comment} (default: {default!r})".strip()
        kwargs = dict(dest=name.lower(), default=default,
                      type=_converter(default, annotations.get(name)), help=help_text,
                      metavar="VALUE")
        if isinstance(default, bool):
            # "--demo" alone means --demo=true.
            kwargs.update(nargs="?", const=True)
        if section and section not in groups:
            groups[section] = parser.add_argument_group(section)
        (groups[section] if section else parser).add_argument(option, **kwargs)
    return parser


def _explicit_booleans(parser, argv):
    """``--flag`` -> ``--flag=true`` for boolean options, so that a flag never
    takes the next word (``predict.py --all clip.wav``: clip.wav is a path)."""
    flags = {option for action in parser._actions if action.const is True
             for option in action.option_strings}
    return [f"{arg}=true" if arg in flags else arg for arg in argv]


def parse_settings(module_globals, argv=None, parser=None):
    """Parse ``argv`` (default: the command line) against the script's constants.

    Returns
    -------
    types.SimpleNamespace
        One lower-case attribute per constant (``cfg.epochs``), plus any
        positional arguments the caller added to ``parser``.
    """
    import sys
    parser = parser or parser_from_constants(module_globals)
    argv = _explicit_booleans(parser, sys.argv[1:] if argv is None else list(argv))
    return SimpleNamespace(**vars(parser.parse_args(argv)))


def stage_settings(script, argv=()):
    """A stage's settings without importing the stage: its upper-case
    constants with literal values, read from ``script``'s source, then
    ``argv`` parsed against them as the stage would. For benchmarks and
    tests, which run the pipeline's functions with a stage's settings (a
    stage is run, never imported).

    Parameters
    ----------
    script : str or Path
        e.g. ROOT / "train_16k.py"
    argv : sequence of str
    """
    import ast
    source = Path(script).read_text(encoding="utf-8")
    tree = ast.parse(source)
    annotations = {}
    constants = {"__file__": str(script), "__doc__": ast.get_docstring(tree),
                 "__annotations__": annotations}
    for node in tree.body:
        target = (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1
                  else node.target if isinstance(node, ast.AnnAssign) and node.value else None)
        if isinstance(target, ast.Name) and target.id.isupper():
            try:
                constants[target.id] = ast.literal_eval(node.value)
            except ValueError:  # not a literal (an array, a call): not a setting
                continue
            if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Name):
                annotations[target.id] = node.annotation.id  # "int" or "float"
    return parse_settings(constants, argv)


def check_settings(cfg, **rules):
    """Raise PipelineError for the first setting that breaks its rule.

    Parameters
    ----------
    cfg : namespace from :func:`parse_settings`
    **rules : (callable, str)
        ``name=(test, expectation)``: ``test(value)`` must be true, else the
        message says ``--name=value: expected <expectation>``.

    Examples
    --------
    >>> check_settings(cfg, epochs=(lambda v: v >= 1, "at least 1"))
    """
    for name, (test, expectation) in rules.items():
        value = getattr(cfg, name)
        if not test(value):
            raise PipelineError(f"--{name}={value!r}: expected {expectation}")


def at_least(low):
    """Rule for :func:`check_settings`: a number >= ``low``."""
    return (lambda v: v >= low, f"at least {low}")


def between(low, high, low_open=False, high_open=False):
    """Rule for :func:`check_settings`: a number in [low, high], with open ends
    where asked (NaN fails every rule)."""
    def test(v):
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    brackets = ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
    return (test, f"a number in {brackets}")


JOBS_RULE = (lambda v: v >= 1 or v <= -1, "at least 1, or -1 for all cores")


def parse_list(text, convert=str, option="value"):
    """Comma-separated text -> list of converted items (blank items skipped).

    Parameters
    ----------
    text : str
        e.g. ``"256,128"``.
    convert : callable
        Applied to each stripped item, e.g. ``int``.
    option : str
        The option's name, for the error message.

    Raises
    ------
    PipelineError
        Naming the option and the item that could not be converted.
    """
    items = [part.strip() for part in str(text).split(",") if part.strip()]
    try:
        return [convert(item) for item in items]
    except ValueError:
        raise PipelineError(f"--{option}={text!r}: expected a comma-separated list of "
                         f"{getattr(convert, '__name__', 'values')}s") from None


def key_value_flags(text, option):
    """"key=value;key=value" -> ["--key=value", ...] (a search's settings
    for another script, e.g. bench_accuracy.py --train); PipelineError naming
    ``option`` for a part that is not key=value."""
    pairs = [p.strip() for p in text.split(";") if p.strip()]
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise PipelineError(f"{option}: {bad[0]!r} is not key=value (e.g. class_weights=false)")
    return ["--" + p for p in pairs]
