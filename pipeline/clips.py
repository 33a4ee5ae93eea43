"""Which clips: audio files found in class folders, listed in a manifest,
or named on a command line."""

import csv
from pathlib import Path
from typing import NamedTuple

from pipeline.errors import PipelineError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")  # what libsndfile reads
SOURCE_COLUMNS = ("source", "source_repo_or_package")  # manifest columns naming a clip's source


class Clip(NamedTuple):
    """One labelled clip. Clips of one ``group`` (source recording) stay on
    one side of every split; ``source`` (repository, microphone, site) is
    optional and used for leave-one-source-out evaluation."""

    path: str
    label: str
    group: str
    source: str = ""


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
        clips += [Clip(str(p), folder.name, str(p)) for p in files]
    return clips, warnings


def clips_from_manifest(manifest):
    """Clips listed in a CSV with columns path,label[,group][,source].

    Relative paths are taken relative to the manifest's folder; a row
    without a group is its own group.

    Returns
    -------
    clips : list of Clip, sorted by label then path
    warnings : list of str (always empty; the same shape as clips_from_folder)
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise PipelineError(f"{manifest}: manifest not found")
    with open(manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise PipelineError(f"{manifest}: manifest needs columns path and label "
                                f"(missing {', '.join(sorted(missing))})")
        source_column = next((c for c in SOURCE_COLUMNS if c in reader.fieldnames), None)
        clips = []
        for row in reader:
            path = Path(row["path"])
            path = str(path if path.is_absolute() else manifest.parent / path)
            clips.append(Clip(path, row["label"].strip(), row.get("group") or path,
                              row[source_column] if source_column else ""))
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
