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
    assert "notes.txt" in out and "Not DICOM" in out
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
