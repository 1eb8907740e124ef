"""`pair import`: folders, zips, DICOMDIR, resumable, with a summary of rejections."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pydicom.fileset import FileSet
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from typer.testing import CliRunner

from pair.cli.main import app
from pair.core.node import open_node
from pair.repository.models import Instance, Study
from tests.factories import ct_instance, write_series

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_import_folder_zip_dicomdir_and_resume(tmp_path: Path) -> None:
    data = tmp_path / "node"
    invoke("facility", "create", "--data-dir", str(data), "Central Hospital")
    folder = tmp_path / "in"
    write_series(folder / "a", n=3)
    (folder / "a" / "notes.txt").write_text("not dicom")
    zpath = tmp_path / "b.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in write_series(tmp_path / "b", n=2, patient={"PatientID": "OTHER1"}):
            zf.write(p, f"b/{p.name}")
    fs = FileSet()
    study, series = generate_uid(), generate_uid()
    for i in (1, 2):
        fs.add(
            ct_instance(study_uid=study, series_uid=series, index=i, patient={"PatientID": "THIRD"})
        )
    dd_root = tmp_path / "media"
    fs.write(dd_root)

    out = invoke(
        "import", "--data-dir", str(data), str(folder), str(zpath), str(dd_root / "DICOMDIR")
    )
    assert "stored" in out and "rejected" in out
    # one line per rejected file, never wrapped at the (non-tty, 80-column) console width
    line = f"rejected {folder / 'a' / 'notes.txt'}: Not DICOM"
    assert any(x.startswith(line) for x in out.splitlines()), out
    node = open_node(data)
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 7
        assert s.scalar(select(func.count()).select_from(Study)) == 3
    out2 = invoke("import", "--data-dir", str(data), str(folder), str(zpath))
    assert "skipped" in out2
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 7
    node.close()


def test_import_errors_are_clear(tmp_path: Path) -> None:
    data = tmp_path / "node"
    result = runner.invoke(app, ["import", "--data-dir", str(data), str(tmp_path / "missing")])
    assert result.exit_code != 0
    assert "facilit" in result.output.lower() or "no such file" in result.output.lower()


def test_import_reports_unreadable_files_and_reads_them_again(tmp_path: Path) -> None:
    """A file a DICOMDIR lists but lacks and a zip member with a bad CRC are rejected with
    that reason (no traceback), and a later run, once they are repaired, imports them."""
    data = tmp_path / "node"
    invoke("facility", "create", "--data-dir", str(data), "Central Hospital")
    fs = FileSet()
    study, series = generate_uid(), generate_uid()
    for i in (1, 2, 3):
        fs.add(ct_instance(study_uid=study, series_uid=series, index=i))
    media = tmp_path / "media"
    fs.write(media)
    lost = sorted(p for p in media.rglob("IM*") if p.is_file())[0]
    lost_bytes = lost.read_bytes()
    lost.unlink()
    members = write_series(tmp_path / "z", n=2, patient={"PatientID": "ZIPPED"})
    zpath = tmp_path / "damaged.zip"
    with zipfile.ZipFile(zpath, "w") as zf:  # stored, so one flipped pixel byte breaks the CRC
        for p in members:
            zf.write(p, p.name)
    good_zip = zpath.read_bytes()
    damaged = bytearray(good_zip)
    damaged[damaged.index(b"DICM") + 600] ^= 0xFF
    zpath.write_bytes(bytes(damaged))

    def squeezed(text: str) -> str:  # rich wraps long lines anywhere
        return "".join(text.split())

    out = squeezed(invoke("import", "--data-dir", str(data), str(media / "DICOMDIR"), str(zpath)))
    assert squeezed("importing into Central Hospital") in out  # the progress bar
    want = f"rejected {lost}: Cannot read the file: listed in the DICOMDIR but missing"
    assert squeezed(want) in out
    assert squeezed(f"rejected {zpath}:img001.dcm: Cannot read the zip member: Bad CRC-32") in out
    node = open_node(data)
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 3

    lost.write_bytes(lost_bytes)
    zpath.write_bytes(good_zip)
    out = squeezed(invoke("import", "--data-dir", str(data), str(media / "DICOMDIR"), str(zpath)))
    assert squeezed(str(lost)) not in out and "BadCRC" not in out
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 5
    node.close()
