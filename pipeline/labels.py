"""Audacity label files: one event per line, ``start<TAB>end<TAB>label``
(seconds), as Audacity's File > Export > Export Labels writes them. Lines
that start with a backslash hold a spectral selection and are skipped."""

from pathlib import Path
from typing import NamedTuple

from pipeline.errors import PipelineError


MAX_LABEL_BYTES = 10_000_000  # a day of labels is well under this; more is not a label file


class LabelledEvent(NamedTuple):
    start_s: float
    end_s: float
    label: str


def read_audacity_labels(path, labels):
    """The events of one label file, checked.

    Parameters
    ----------
    path : str or Path
    labels : collection of str
        The classes an event may have (the model's).

    Returns
    -------
    list of LabelledEvent, in file order (which must be by start time)

    Raises
    ------
    PipelineError
        Naming the file and line: not three tab-separated fields, a time that
        is not a number or is negative, start after end, a start before the
        previous line's start, or a label the model does not have.
    """
    from pipeline.files import check_regular
    path = Path(path)
    check_regular(path, "label file")  # a FIFO or device would hang the read
    if path.stat().st_size > MAX_LABEL_BYTES:
        raise PipelineError(f"{path}: {path.stat().st_size:,} bytes, too large for a label file "
                            f"(at most {MAX_LABEL_BYTES:,}); is it the right file?")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read the label file ({err})") from None
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        where = f"{path}:{number}"
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 3:
            raise PipelineError(f"{where}: expected start<TAB>end<TAB>label, got {line!r}")
        try:
            start, end = float(fields[0]), float(fields[1])
        except ValueError:
            raise PipelineError(f"{where}: start and end must be numbers of seconds, got "
                                f"{fields[0]!r} and {fields[1]!r}") from None
        if not 0 <= start <= end < float("inf"):
            raise PipelineError(f"{where}: expected 0 <= start <= end, got {start:g} and {end:g}")
        if events and start < events[-1].start_s:
            raise PipelineError(f"{where}: starts at {start:g} s, before the line above "
                                f"({events[-1].start_s:g} s); keep the lines in time order")
        label = fields[2].strip()
        if label not in labels:
            raise PipelineError(f"{where}: unknown label {label!r}; the model has "
                                f"{sorted(labels)}")
        events.append(LabelledEvent(start, end, label))
    return events


def merge_overlapping(events):
    """One event per overlapping (or touching) run of labels of one class:
    three overlapping 'alarm' labels are one alarm, not three.

    Parameters
    ----------
    events : list of LabelledEvent

    Returns
    -------
    list of LabelledEvent, sorted by start
    """
    merged = []
    for event in sorted(events, key=lambda e: (e.label, e.start_s, e.end_s)):
        last = merged[-1] if merged else None
        if last is not None and last.label == event.label and event.start_s <= last.end_s:
            merged[-1] = last._replace(end_s=max(last.end_s, event.end_s))
        else:
            merged.append(event)
    return sorted(merged, key=lambda e: (e.start_s, e.label))


def within_recording(events, duration_s, path):
    """The events cut to the recording's length; PipelineError for a label
    that starts after the recording ends (the label file of another
    recording?), which would otherwise count as a miss."""
    beyond = [e for e in events if e.start_s >= duration_s]
    if beyond:
        raise PipelineError(f"{label_file_for(path)}: a {beyond[0].label!r} label starts at "
                            f"{beyond[0].start_s:g} s, but {Path(path).name} is only "
                            f"{duration_s:.2f} s long; is it the label file of another "
                            "recording?")
    return [e._replace(end_s=min(e.end_s, duration_s)) for e in events]


def label_file_for(audio_path):
    """The label file of a recording: the same name with .txt."""
    return Path(audio_path).with_suffix(".txt")


def recordings_in(folder):
    """The audio files under ``folder``; PipelineError when there are none."""
    from pipeline import clips
    if not Path(folder).is_dir():
        raise PipelineError(f"{folder}: no such folder (expected a folder of recordings)")
    recordings = clips.expand_paths([folder])
    if not recordings:
        raise PipelineError(f"{folder}: no recordings (looked for "
                            f"{', '.join(clips.AUDIO_EXTENSIONS)})")
    return recordings


def labelled_recordings(folder, labels):
    """(recording, its events) for every recording under ``folder``, each
    with an Audacity label file beside it (checked before any is read)."""
    recordings = recordings_in(folder)
    missing = [label_file_for(p) for p in recordings if not label_file_for(p).is_file()]
    if missing:
        raise PipelineError(f"{missing[0]}: label file missing ({len(missing)} in all). Export "
                            "the labels from Audacity beside each recording; an empty file "
                            "means the recording holds no events")
    return [(path, read_audacity_labels(label_file_for(path), labels)) for path in recordings]
