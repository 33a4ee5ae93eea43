"""Get ESC-50 as real training data for water / alarm / other, in one command.

    python data/prepare_esc50.py                       # download (resumable), verify, extract
    python data/prepare_esc50.py --local=ESC-50-master.zip   # or a copy you already have
    python make_dataset_16k.py --manifest=data/esc50/manifest.csv

ESC-50 (Piczak, 2015) is 2000 five-second clips in 50 categories, licensed
CC BY-NC 3.0 (non-commercial; attribution required). CATEGORIES below maps
its categories to our labels; categories that fit neither water nor alarm
cleanly are left out. Groups are ESC-50's source-clip ids (``src_file``), so
takes of one Freesound recording stay on one side of every split.
"""

import csv
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import files, settings  # noqa: E402
from pipeline.errors import PipelineError, run_script  # noqa: E402

URL = "https://github.com/karolpiczak/ESC-50/archive/refs/heads/master.zip"  # ESC-50 archive
OUT_DIR = "data/esc50"         # archive, extracted files and manifest go here
LOCAL = None                   # an ESC-50 zip or extracted folder you already have (no download)
MANIFEST = "data/esc50/manifest.csv"  # written for make_dataset_16k.py --manifest
TIMEOUT_S = 60                 # network timeout per read

# ESC-50 category -> our label. Categories not listed are "other"; EXCLUDED
# ones are left out because they are partly water or alarm-like.
CATEGORIES = {
    "pouring_water": "water", "water_drops": "water", "toilet_flush": "water", "rain": "water",
    "clock_alarm": "alarm", "siren": "alarm",
}
EXCLUDED = ("sea_waves", "thunderstorm", "drinking_sipping", "brushing_teeth",
            "washing_machine", "car_horn", "church_bells")
_ARCHIVE_NAME = "ESC-50-master.zip"  # the download's file name in OUT_DIR
_META = "meta/esc50.csv"  # ESC-50's own list of clips, inside the archive


def download(url, target, timeout):
    """Download ``url`` to ``target``, resuming a ``target.part`` left by an
    interrupted run (HTTP Range). The finished file appears only when complete."""
    from tqdm import tqdm
    part = Path(str(target) + ".part")
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and done:  # "range not satisfiable": the part is already whole
            part.replace(target)
            return target
        raise PipelineError(f"cannot download {url} (HTTP {err.code}). Pass --local=PATH "
                            "to a copy you already have") from None
    except OSError as err:
        raise PipelineError(f"cannot download {url} ({err}). Check the connection, or pass "
                            "--local=PATH to a copy you already have") from None
    with response:
        resumed = done and getattr(response, "status", 200) == 206
        if not resumed:
            done = 0  # the server sent the whole file: start again
        length = response.headers.get("Content-Length")
        total = done + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as fh, \
                tqdm(total=total, initial=done, unit="B", unit_scale=True,
                     desc=Path(target).name, disable=None) as progress:
            for block in iter(lambda: response.read(1 << 16), b""):
                fh.write(block)
                progress.update(len(block))
    part.replace(target)
    return target


def verify_archive(path):
    """Raise PipelineError unless ``path`` is a complete ESC-50 zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise PipelineError(f"{path}: not a valid zip archive ({err}); delete it and run "
                            "again to download a fresh copy") from None
    if bad:
        raise PipelineError(f"{path}: {bad} is corrupt; delete the archive and run again")
    if not any(n.endswith(_META) for n in names):
        raise PipelineError(f"{path}: no {_META} inside; is this the ESC-50 archive?")


def safe_extract(archive_path, out_dir):
    """Extract a zip only inside ``out_dir`` (absolute paths, '..' and links
    are refused). Returns the folder that holds meta/esc50.csv."""
    out_dir = Path(out_dir).resolve()
    with zipfile.ZipFile(archive_path) as archive:
        for member in archive.infolist():
            target = (out_dir / member.filename).resolve()
            if out_dir != target and out_dir not in target.parents:
                raise PipelineError(f"{archive_path}: member {member.filename!r} would be "
                                    f"written outside {out_dir}; refusing to extract")
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise PipelineError(f"{archive_path}: member {member.filename!r} is a link; "
                                    "refusing to extract")
        archive.extractall(out_dir)
    return find_root(out_dir)


def find_root(folder):
    """The folder under ``folder`` (or itself) that holds meta/esc50.csv."""
    folder = Path(folder)
    for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if (candidate / _META).is_file():
            return candidate
    raise PipelineError(f"{folder}: no {_META} found; is this an ESC-50 folder?")


def label_of(category):
    """Our label for an ESC-50 category, or None when it is excluded."""
    if category in EXCLUDED:
        return None
    return CATEGORIES.get(category, "other")


def write_manifest(root, manifest):
    """Manifest rows for every mapped clip; returns (clips per label, excluded)."""
    manifest = Path(manifest)
    rows, counts, excluded = [], {}, 0
    with open(Path(root) / _META, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = label_of(row["category"])
            if label is None:
                excluded += 1
                continue
            audio = (Path(root) / "audio" / row["filename"]).resolve()
            path = Path(audio).relative_to(manifest.parent.resolve()) \
                if manifest.parent.resolve() in audio.parents else audio
            rows.append([str(path), label, f"esc50:{row['src_file']}", "ESC-50",
                         row["category"], "CC BY-NC 3.0 (ESC-50)"])
            counts[label] = counts.get(label, 0) + 1
    files.write_csv(manifest, [["path", "label", "group", "source_repo_or_package",
                                "category", "license"], *sorted(rows)])
    return counts, excluded


def main(argv=None):
    cfg = settings.parse_settings(globals(), argv)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.local and Path(cfg.local).is_dir():
        root = find_root(cfg.local)
    else:
        archive = Path(cfg.local) if cfg.local else out_dir / _ARCHIVE_NAME
        if cfg.local and not archive.is_file():
            raise PipelineError(f"{archive}: not found")
        if not archive.is_file():
            print(f"downloading ESC-50 (about 600 MB) from {cfg.url}")
            download(cfg.url, archive, cfg.timeout_s)
        verify_archive(archive)
        root = safe_extract(archive, out_dir)
    counts, excluded = write_manifest(root, cfg.manifest)
    print(f"wrote {cfg.manifest}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f" clips; {excluded} excluded")
    print("ESC-50 is licensed CC BY-NC 3.0: non-commercial use, with attribution.")
    print(f"next: python make_dataset_16k.py --manifest={cfg.manifest}")
    return 0


if __name__ == "__main__":
    run_script(main)
