"""``pair deid`` on a folder and ``pair deid-export-mapping``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pydicom
from sqlalchemy import select
from typer.testing import CliRunner

from pair.cli.main import app
from pair.core.node import open_node
from pair.repository.models import Instance, Patient, Series, Study
from tests.factories import write_series

runner = CliRunner()


def _folder(tmp_path: Path, shared_data: Path) -> Path:
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    for name in ("deid_ctbrain1.dcm", "pydicom_CT_small.dcm", "highdicom_sr_document.dcm"):
        shutil.copy(shared_data / "dicom" / name, src / "nested" / name)
    (src / "notes.txt").write_text("not dicom")
    (src / "truncated.dcm").write_bytes(
        (shared_data / "dicom" / "highdicom_dx_image.dcm").read_bytes()[:400]
    )
    planted = pydicom.dcmread(shared_data / "dicom" / "highdicom_dx_image.dcm")
    planted.StudyComments = "x"
    planted.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    planted.add_new(0x00191018, "LO", "AVeryGood")  # removed: the default keeps no private
    planted.BodyPartExamined = "AVeryGood"  # kept by the Basic Profile, carrying the name
    planted.save_as(src / "planted.dcm")
    return src


def test_deid_folder_and_export(tmp_path: Path, shared_data: Path) -> None:
    data_dir = tmp_path / "node"
    src, dst = _folder(tmp_path, shared_data), tmp_path / "out"
    r = runner.invoke(
        app, ["facility", "create", "--data-dir", str(data_dir), "General Hospital", "--code", "GH"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["deid", "--data-dir", str(data_dir), str(src), str(dst)])
    assert r.exit_code == 4, r.output  # something was quarantined or rejected
    assert "written: 3" in r.output and "quarantined (residual PHI): 1" in r.output
    assert "rejected: 2" in r.output
    assert "notes.txt: not a DICOM file" in r.output
    assert "truncated.dcm" in r.output
    written = sorted(dst.glob("GH-*/*/*/*.dcm"))
    assert len(written) == 3
    for path in written:
        ds = pydicom.dcmread(path)
        assert path.parts[-4] == ds.PatientID and path.stem == ds.SOPInstanceUID
        assert ds.PatientIdentityRemoved == "YES"
    quarantined = list((dst / "quarantine").glob("*.dcm"))
    assert len(quarantined) == 1
    reasons = json.loads(quarantined[0].with_suffix(".json").read_text())
    assert [(f["path"], f["source"]) for f in reasons["findings"]] == [
        ("(0018,0015)", "PatientName")
    ]
    assert "AVeryGood".lower() not in quarantined[0].with_suffix(".json").read_text().lower()
    summary = json.loads((dst / "deid-summary.json").read_text())
    assert summary["written"] == 3 and summary["rejected"] == 2
    assert len(summary["flagged_burned_in_risk"]) == 1  # the secondary capture

    # the same run again: same keys, same output paths
    r2 = runner.invoke(
        app,
        [
            "deid",
            "--data-dir",
            str(data_dir),
            "--facility",
            "GH",
            str(src),
            str(tmp_path / "again"),
        ],
    )
    assert r2.exit_code == 4
    again = sorted(
        p.relative_to(tmp_path / "again") for p in (tmp_path / "again").glob("GH-*/*/*/*.dcm")
    )
    assert again == [p.relative_to(dst) for p in written]

    out_csv = tmp_path / "mapping.csv"
    r = runner.invoke(
        app, ["deid-export-mapping", "--data-dir", str(data_dir), "--facility", "GH", str(out_csv)]
    )
    assert r.exit_code == 0, r.output
    assert "protected health information" in r.output
    rows = list(csv.DictReader(out_csv.open()))
    assert {row["original_patient_id"] for row in rows} == {"00007041776", "1CT1", "123456"}
    assert (out_csv.stat().st_mode & 0o777) == 0o600


def test_deid_needs_facility_when_several(tmp_path: Path, shared_data: Path) -> None:
    data_dir = tmp_path / "node"
    for name in ("A Hospital", "B Hospital"):
        runner.invoke(app, ["facility", "create", "--data-dir", str(data_dir), name])
    r = runner.invoke(
        app, ["deid", "--data-dir", str(data_dir), str(tmp_path), str(tmp_path / "o")]
    )
    assert r.exit_code == 2
    assert "pass --facility" in r.output


def test_deid_profile_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    runner.invoke(
        app, ["facility", "create", "--data-dir", str(data_dir), "General Hospital", "--code", "GH"]
    )
    r = runner.invoke(app, ["deid-profile", "--data-dir", str(data_dir), "--facility", "GH"])
    assert r.exit_code == 0 and "PAIR pair-default v1 (site default)" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("options: {retain_everything: true}\n")
    r = runner.invoke(
        app, ["deid-profile", "--data-dir", str(data_dir), "--facility", "GH", str(bad)]
    )
    assert r.exit_code == 2
    assert "options.retain_everything: unknown key" in " ".join(r.output.split())
    good = tmp_path / "strict.yaml"
    good.write_text("name: strict\nversion: 2\noptions: {retain_patient_characteristics: true}\n")
    r = runner.invoke(
        app, ["deid-profile", "--data-dir", str(data_dir), "--facility", "GH", str(good)]
    )
    assert r.exit_code == 0 and "PAIR strict v2 (facility)" in r.output
    assert "retain_patient_characteristics" in r.output
    r = runner.invoke(
        app, ["deid-profile", "--data-dir", str(data_dir), "--facility", "GH", "--reset"]
    )
    assert r.exit_code == 0 and "(site default)" in r.output


def test_offline_deid_uses_the_keys_ingest_used(tmp_path: Path) -> None:
    """`pair deid` on files already imported gives the UIDs, pseudonym and shifted dates that
    ingest stored: same engine, same site secret, same mapping store."""
    data_dir, src = tmp_path / "node", tmp_path / "in"
    paths = write_series(src, n=3)
    for args in (
        ["facility", "create", "--data-dir", str(data_dir), "General Hospital", "--code", "GH"],
        ["import", "--data-dir", str(data_dir), str(src)],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    node = open_node(data_dir)
    with node.db.session() as s:
        stored = set(
            s.execute(
                select(
                    Instance.sop_instance_uid, Study.study_uid, Patient.pseudonym, Study.study_date
                )
                .join(Series, Instance.series_pk == Series.id)
                .join(Study, Series.study_pk == Study.id)
                .join(Patient, Study.patient_pk == Patient.id)
            ).tuples()
        )
    node.close()
    assert len(stored) == len(paths)
    r = runner.invoke(app, ["deid", "--data-dir", str(data_dir), str(src), str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    offline = set()
    for path in (tmp_path / "out").glob("GH-*/*/*/*.dcm"):
        ds = pydicom.dcmread(path)
        offline.add((ds.SOPInstanceUID, ds.StudyInstanceUID, ds.PatientID, ds.StudyDate))
    assert offline == stored
    assert {p for _, _, p, _ in stored} == {"GH-000001"}
    assert {d for _, _, _, d in stored} != {pydicom.dcmread(paths[0]).StudyDate}  # shifted
