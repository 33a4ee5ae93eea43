"""Which clips: audio files found in class folders, listed in a manifest,
or named on a command line."""

import csv
import os
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from pipeline.errors import PipelineError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")  # what libsndfile reads
SOURCE_COLUMNS = ("source", "source_repo_or_package")  # manifest columns naming a clip's source
LABEL_RULE = re.compile(r"[A-Za-z0-9_-]+")  # labels reach file names and C code: keep them plain


class Clip(NamedTuple):
    """One labelled clip. Clips of one ``group`` (source recording) stay on
    one side of every split; ``source`` (repository, microphone, site) is
    optional and used for leave-one-source-out evaluation."""

    path: str
    label: str
    group: str
    source: str = ""


def check_label(label, where):
    """Raise PipelineError unless ``label`` is a plain class name."""
    if not LABEL_RULE.fullmatch(label):
        raise PipelineError(f"{where}: class name {label!r} is not allowed; use only letters, "
                            "digits, '_' and '-'")


def is_audio_file(path):
    """An audio extension, not hidden, and a file (or a link, even a broken
    one, so that it is reported as unreadable rather than silently ignored)."""
    path = Path(path)
    return ((path.is_file() or path.is_symlink()) and not path.name.startswith(".")
            and path.suffix.lower() in AUDIO_EXTENSIONS)


def clips_from_folder(data_dir):
    """Clips of ``data_dir/<label>/**/<audio file>``; each file is its own group.

    Hidden files, non-audio files and files directly in ``data_dir`` are
    ignored; a sub-folder without audio files is reported in the warnings.

    Returns
    -------
    clips : list of Clip
    warnings : list of str
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PipelineError(
            f"{data_dir}: data folder not found. Put one sub-folder of clips per class "
            "there, pass --data_dir=DIR or --manifest=CSV, or run with --demo.")
    clips, warnings = [], []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        files = sorted(p for p in folder.rglob("*") if is_audio_file(p))
        if not files:
            warnings.append(f"{folder}: no audio files, so '{folder.name}' is not a class")
            continue
        check_label(folder.name, folder)
        clips += [Clip(str(p), folder.name, str(p)) for p in files]
    return clips, warnings


def clips_from_manifest(manifest):
    """Clips listed in a CSV with columns path,label[,group][,source].

    Relative paths are taken relative to the manifest's folder; a row
    without a group is its own group. A UTF-8 byte-order mark (as Excel
    writes) is accepted.

    Returns
    -------
    clips : list of Clip, sorted by label then path
    warnings : list of str (always empty; the same shape as clips_from_folder)

    Raises
    ------
    PipelineError
        Naming the line: a row without path or label, a label that is not a
        plain class name; and listing every path that appears twice.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise PipelineError(f"{manifest}: manifest not found")
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise PipelineError(f"{manifest}: manifest needs columns path and label "
                                f"(missing {', '.join(sorted(missing))})")
        source_column = next((c for c in SOURCE_COLUMNS if c in reader.fieldnames), None)
        clips = []
        for row in reader:
            where = f"{manifest}, line {reader.line_num}"
            if not (row.get("path") or "").strip():
                raise PipelineError(f"{where}: no path")
            label = (row.get("label") or "").strip()
            if not label:
                raise PipelineError(f"{where}: no label for {row['path']!r}")
            check_label(label, where)
            path = Path(row["path"].strip())
            path = os.path.normpath(path if path.is_absolute() else manifest.parent / path)
            clips.append(Clip(path, label, (row.get("group") or "").strip() or path,
                              (row.get(source_column) or "").strip() if source_column else ""))
    repeated = sorted(p for p, n in Counter(c.path for c in clips).items() if n > 1)
    if repeated:
        raise PipelineError(f"{manifest}: {len(repeated)} path(s) listed more than once, so "
                            f"the same audio could land in training and test: "
                            f"{', '.join(repeated[:5])}{' ...' if len(repeated) > 5 else ''}")
    return sorted(clips, key=lambda c: (c.label, c.path)), []


def list_clips(data_dir, manifest):
    """Clips from ``manifest`` when given, else from the class folders of
    ``data_dir``; warnings as in :func:`clips_from_folder`."""
    return clips_from_manifest(manifest) if manifest else clips_from_folder(data_dir)


def expand_paths(paths):
    """Files as given, and audio files found recursively in folders."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if is_audio_file(p))
        else:
            found.append(path)
    return found
