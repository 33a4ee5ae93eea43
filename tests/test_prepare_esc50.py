"""data/prepare_esc50.py on a fake ESC-50 layout; no network but loopback."""

import csv
import http.server
import sys
import threading
import zipfile

import numpy as np
import pytest

from pipeline.errors import PipelineError
from conftest import ROOT, noise, write

sys.path.insert(0, str(ROOT / "data"))
import prepare_esc50  # noqa: E402

CATEGORIES = ["pouring_water", "siren", "dog", "sea_waves", "clock_alarm", "rain"]


@pytest.fixture
def fake_zip(tmp_path):
    """ESC-50-master/{meta/esc50.csv, audio/*.wav}: two takes of one source per category."""
    root = tmp_path / "src" / "ESC-50-master"
    rows = []
    for k, category in enumerate(CATEGORIES):
        for take in "AB":
            name = f"1-{1000 + k}-{take}-{k}.wav"
            write(root / "audio" / name, noise(0.2, seed=k))
            rows.append([name, 1, k, category, False, 1000 + k, take])
    (root / "meta").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["filename", "fold", "target", "category", "esc10",
                                   "src_file", "take"], *rows])
    archive = tmp_path / "ESC-50-master.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.rglob("*")):
            z.write(path, path.relative_to(root.parent))
    return archive


def read_manifest(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def check_manifest(manifest):
    rows = read_manifest(manifest)
    by_category = {}
    for row in rows:
        by_category.setdefault(row["category"], set()).add(row["label"])
    assert by_category == {"pouring_water": {"water"}, "rain": {"water"}, "siren": {"alarm"},
                           "clock_alarm": {"alarm"}, "dog": {"other"}}  # sea_waves excluded
    siren = [r for r in rows if r["category"] == "siren"]
    assert len(siren) == 2 and siren[0]["group"] == siren[1]["group"] == "esc50:1001"
    assert all((manifest.parent / r["path"]).is_file() for r in rows)


def test_local_zip_mapping_groups_and_exclusions(fake_zip, tmp_path):
    out = tmp_path / "esc50"
    prepare_esc50.main([f"--local={fake_zip}", f"--out_dir={out}",
                        f"--manifest={out / 'manifest.csv'}"])
    check_manifest(out / "manifest.csv")


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file, honouring 'Range: bytes=N-'."""
    payload = b""
    ranges_seen = []

    def do_GET(self):
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.ranges_seen.append(start)
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_resumed_download_from_local_server(fake_zip, tmp_path):
    RangeHandler.payload = fake_zip.read_bytes()
    server = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = tmp_path / "esc50"
        out.mkdir()
        half = len(RangeHandler.payload) // 2
        (out / "ESC-50-master.zip.part").write_bytes(RangeHandler.payload[:half])
        prepare_esc50.main([f"--url=http://127.0.0.1:{server.server_port}/esc50.zip",
                            f"--out_dir={out}", f"--manifest={out / 'manifest.csv'}"])
    finally:
        server.shutdown()
    assert RangeHandler.ranges_seen == [half]
    assert (out / "ESC-50-master.zip").read_bytes() == RangeHandler.payload
    assert not (out / "ESC-50-master.zip.part").exists()
    check_manifest(out / "manifest.csv")


def test_file_url_and_corrupt_archive(fake_zip, tmp_path):
    out = tmp_path / "esc50"
    prepare_esc50.main([f"--url={fake_zip.as_uri()}", f"--out_dir={out}",
                        f"--manifest={out / 'manifest.csv'}"])
    check_manifest(out / "manifest.csv")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(fake_zip.read_bytes()[:-200])
    with pytest.raises(PipelineError, match="not a valid zip.*delete it"):
        prepare_esc50.main([f"--local={broken}", f"--out_dir={tmp_path / 'x'}",
                            f"--manifest={tmp_path / 'x' / 'm.csv'}"])


def test_archive_cannot_write_outside_its_folder(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("ESC-50-master/meta/esc50.csv", "filename,category,src_file\n")
        z.writestr("../escaped.txt", "gotcha")
    with pytest.raises(PipelineError, match="outside"):
        prepare_esc50.main([f"--local={evil}", f"--out_dir={tmp_path / 'out'}",
                            f"--manifest={tmp_path / 'out' / 'm.csv'}"])
    assert not (tmp_path / "escaped.txt").exists()


def test_dataset_builds_from_the_manifest(fake_zip, tmp_path):
    from pipeline import artifacts
    import make_dataset_16k
    out = tmp_path / "esc50"
    prepare_esc50.main([f"--local={fake_zip}", f"--out_dir={out}",
                        f"--manifest={out / 'manifest.csv'}"])
    make_dataset_16k.main([f"--manifest={out / 'manifest.csv'}", f"--dataset={tmp_path / 'd.npz'}",
                           "--jobs=1"])
    data = artifacts.load_dataset(tmp_path / "d.npz")
    assert data["label_names"] == ["alarm", "other", "water"] and len(data["paths"]) == 10
    assert len(set(data["groups"])) == 5 and np.all(np.isfinite(data["features"]))
