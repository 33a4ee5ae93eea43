"""pipeline/clips.py: which clips, from folders and manifests; bad rows refused."""

import pytest

from conftest import make_class_folder
from pipeline import clips
from pipeline.errors import PipelineError


def write_manifest(path, text, bom=False):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_manifest_rows_groups_sources_and_bom(tmp_path):
    make_class_folder(tmp_path / "clips", per_class=2)
    manifest = write_manifest(tmp_path / "m.csv", "path,label,group,source\n"
                              "clips/tone/tone_0.wav,tone,r1,micA\n"
                              "clips/hiss/hiss_0.wav,hiss,,micB\n", bom=True)
    found, warnings = clips.clips_from_manifest(manifest)
    assert warnings == []
    assert [(c.label, c.group, c.source) for c in found] == [
        ("hiss", str(tmp_path / "clips/hiss/hiss_0.wav"), "micB"), ("tone", "r1", "micA")]


@pytest.mark.parametrize("rows, message", [
    ("a.wav,tone,g\nb.wav,,g\n", r"line 3: no label for 'b.wav'"),
    ("a.wav,tone,g\nb.wav\n", r"line 3: no label"),
    ("a.wav,tone,g\n,tone,g\n", r"line 3: no path"),
    ("a.wav,to ne,g\n", r"line 2: class name 'to ne' is not allowed"),
    ("a.wav,x/../../tmp/a,g\n", r"line 2: class name 'x/../../tmp/a' is not allowed"),
    ('a.wav,"x""y",g\n', r"line 2: class name 'x\"y' is not allowed"),
    ("a.wav,tone,g1\nsub/../a.wav,hiss,g2\nb.wav,tone,g3\n",
     r"1 path\(s\) listed more than once.*a\.wav"),
])
def test_bad_manifest_rows_are_refused_naming_the_line(tmp_path, rows, message):
    manifest = write_manifest(tmp_path / "m.csv", "path,label,group\n" + rows)
    with pytest.raises(PipelineError, match=message):
        clips.clips_from_manifest(manifest)


def test_missing_columns(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", "file,class\na.wav,tone\n")
    with pytest.raises(PipelineError, match="needs columns path and label"):
        clips.clips_from_manifest(manifest)


def test_folder_names_follow_the_label_rule(tmp_path):
    root = make_class_folder(tmp_path / "clips", per_class=1)
    (root / "tone").rename(root / "to ne")
    with pytest.raises(PipelineError, match="class name 'to ne' is not allowed"):
        clips.clips_from_folder(root)
