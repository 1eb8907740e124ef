"""The vendored test data (tests/data) is complete, unchanged, attributed and small.

Guards the licence record: a file added without running scripts/vendor_test_data.py has no
row in LICENSES.md and fails here.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parent / "data"
MAX_BYTES = 3_000_000


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_file_is_listed_checksummed_and_licensed() -> None:
    labels = _rows(DATA / "labels.csv")
    manifest = _rows(DATA / "dicom" / "manifest.csv")
    licences = (DATA / "LICENSES.md").read_text(encoding="utf-8")
    listed = {r["file"] for r in labels} | {f"dicom/{m['file']}" for m in manifest}
    on_disk = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*.png")} | {
        p.relative_to(DATA).as_posix() for p in DATA.rglob("*.dcm")
    }
    assert listed == on_disk
    for r in labels:
        assert _sha256(DATA / r["file"]) == r["sha256"], r["file"]
        with Image.open(DATA / r["file"]) as im:
            assert (im.mode, im.size) == ("L", (int(r["width"]), int(r["height"]))), r["file"]
        assert r["license"] and r["attribution"], r["file"]
        assert f"| {r['file']} |" in licences, r["file"]
    for m in manifest:
        path = DATA / "dicom" / m["file"]
        assert _sha256(path) == m["sha256"] and path.stat().st_size == int(m["bytes"]), m["file"]
        assert f"| dicom/{m['file']} |" in licences, m["file"]
    assert len(labels) == 48 and {r["label"] for r in labels} == {"covid", "non_covid"}


def test_the_folder_stays_small() -> None:
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < MAX_BYTES
