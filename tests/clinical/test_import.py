"""CSV import: precise row errors, all-or-nothing, --skip-invalid with a rejects CSV, dates."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.cli.main import app
from pair.clinical.csvimport import import_csv
from pair.clinical.models import ClinicalRecord
from pair.core.errors import Invalid
from pair.core.node import Node
from tests.portal_data import build_world

HEADER = (
    "patient_id,accession_number,index_event_date,covid19_positive,test_method,test_date,"
    "age_at_index,sex,days_to_hospital_admission,hospital_discharge_date\n"
)


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "clinical.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def records(node: Node) -> dict[int, dict[str, object]]:
    with node.db.session() as s:
        return {r.patient_pk: r.data for r in s.scalars(select(ClinicalRecord))}


GOOD = (
    "MRN10001,,2020-03-01,Yes,RT-PCR,2020-03-03,91,Female,2,2020-03-11\n"
    ",ACC10002,20200301,No,Rapid antigen test,,45,male,,\n"
)
BAD = "MRN10003,,2020-03-01,Maybe,RT-PCR,2020-13-03,abc,Female,5,2020-03-02\nNOPE,,,,,,,,,\n"


def test_bad_rows_import_nothing(node: Node, tmp_path: Path) -> None:
    with node.db.session() as s:
        world = build_world(s)
        facility = accounts.get_facility(s, world.facilities["A"])
        result = import_csv(s, facility, write(tmp_path, GOOD + BAD), Actor.system())
    assert not result.committed and result.imported == 0 and result.rejected == 2
    got = {(e.row, e.column, e.value, e.rule) for e in result.errors}
    assert got == {
        (4, "covid19_positive", "Maybe", "enum"),
        (4, "test_date", "2020-13-03", "date"),
        (4, "age_at_index", "abc", "integer"),
        (4, "hospital_discharge_date", "2020-03-02", "not_before"),
        (5, "patient_id", "NOPE", "known_case"),
    }
    assert "row 4, column 'age_at_index', value 'abc'" in str(result.errors[2])
    assert records(node) == {}


def test_skip_invalid_imports_valid_rows_and_writes_rejects(node: Node, tmp_path: Path) -> None:
    with node.db.session() as s:
        world = build_world(s)
        facility = accounts.get_facility(s, world.facilities["A"])
        rejects = tmp_path / "rejects.csv"
        result = import_csv(
            s,
            facility,
            write(tmp_path, GOOD + BAD),
            Actor.system(),
            skip_invalid=True,
            rejects_path=rejects,
        )
    assert result.committed and result.imported == 2 and result.rejected == 2
    data = records(node)
    first, second = data[world.cases["HOSPA-00001"]], data[world.cases["HOSPA-00002"]]
    # dates became days from the index event; ages above 89 are top-coded with the flag
    assert first["test_days_from_index"] == 2 and first["days_to_hospital_discharge"] == 10
    assert first["age_at_index"] == 89 and first["age_at_index_gt89"] == "Yes"
    assert second["sex"] == "Male" and second["test_method"] == "Rapid antigen test"
    # originals (MRN, accession, dates) are never stored in the shareable record
    assert "MRN" not in str(data) and "ACC" not in str(data) and "2020" not in str(data)
    rows = list(csv.DictReader(rejects.open()))
    assert [r["row"] for r in rows] == ["4", "5"]
    assert "age_at_index" in rows[0]["errors"] and "known_case" in rows[1]["errors"]


def test_header_and_duplicate_checks(node: Node, tmp_path: Path) -> None:
    with node.db.session() as s:
        world = build_world(s)
        facility = accounts.get_facility(s, world.facilities["A"])
        with pytest.raises(Invalid, match="Unknown CSV column"):
            import_csv(s, facility, write(tmp_path, "", "patient_id,shoe_size\n"), Actor.system())
        with pytest.raises(Invalid, match="key column"):
            import_csv(s, facility, write(tmp_path, "", "sex\n"), Actor.system())
        dup = (
            "patient_id,accession_number,sex\nMRN10001,,Female\n,ACC10001,Male\n"
            "MRN10001,ACC10002,Male\n"
        )
        result = import_csv(s, facility, write(tmp_path, dup, ""), Actor.system())
        assert {(e.row, e.rule) for e in result.errors} == {
            (3, "duplicate_case"),
            (4, "same_case"),
            (4, "duplicate_case"),
        }
        # facility B cannot reach facility A's patients
        b = accounts.get_facility(s, world.facilities["B"])
        other = import_csv(
            s, b, write(tmp_path, "patient_id,sex\nMRN10001,Female\n", ""), Actor.system()
        )
        assert [e.rule for e in other.errors] == ["known_case"]


def test_cli_import(sqlite_node: Node, tmp_path: Path) -> None:
    with sqlite_node.db.session() as s:
        build_world(s)
    data_dir = str(sqlite_node.settings.data_dir)
    runner = CliRunner()
    bad = write(tmp_path, GOOD + BAD)
    r = runner.invoke(app, ["clinical", "import", "--data-dir", data_dir, str(bad)])
    assert r.exit_code == 2 and "--facility" in r.output
    r = runner.invoke(
        app, ["clinical", "import", "--data-dir", data_dir, "--facility", "Hospital A", str(bad)]
    )
    assert r.exit_code == 2, r.output
    assert "row 4, column 'covid19_positive', value 'Maybe'" in r.output
    assert "nothing imported" in r.output and records(sqlite_node) == {}
    r = runner.invoke(
        app,
        [
            "clinical",
            "import",
            "--data-dir",
            data_dir,
            "--facility",
            "HOSPA",
            "--skip-invalid",
            str(bad),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "imported 2 of 4 rows" in r.output
    assert (tmp_path / "clinical.rejects.csv").is_file()
    assert len(records(sqlite_node)) == 2


def test_site_column_and_aliases(node: Node, tmp_path: Path) -> None:
    """`pair synth`'s clinical.csv shape: a site column and `age` for age_at_index."""
    body = (
        "patient_id,site,age,sex\n"
        "MRN10001,Hospital A,93,Female\n"
        "MRN20001,hospb,40,Male\n"
        "MRN10002,nowhere,abc,Male\n"
    )
    with node.db.session() as s:
        world = build_world(s)
        result = import_csv(s, None, write(tmp_path, body, ""), Actor.system())
        assert not result.committed
        assert {(e.row, e.column, e.value, e.rule) for e in result.errors} == {
            (4, "site", "nowhere", "known_site"),
            (4, "age", "abc", "integer"),
        }
        result = import_csv(s, None, write(tmp_path, body, ""), Actor.system(), skip_invalid=True)
        assert result.imported == 2
        a = accounts.get_facility(s, world.facilities["A"])
        only_a = import_csv(
            s, a, write(tmp_path, body.rsplit("\n", 2)[0] + "\n", ""), Actor.system()
        )
        assert only_a.committed and only_a.imported == 1 and only_a.skipped == 1
    data = records(node)
    assert data[world.cases["HOSPA-00001"]]["age_at_index"] == 89
    assert data[world.cases["HOSPB-00001"]]["sex"] == "Male"
