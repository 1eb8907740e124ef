"""Registry service on SQLite and PostgreSQL: cohort counts and drill-down, validation of the
typed query, exports read back with DuckDB and pyarrow, DICOM zip, data quality, dashboards and
the approval rule."""

from __future__ import annotations

import csv
import io
import math
import zipfile
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pair.audit.service import Actor
from pair.core.errors import Forbidden, Invalid
from pair.core.node import Node
from pair.registry import service
from pair.registry.cohort import CohortQuery, from_terms, parse_terms, validate_query
from pair.registry.dashboard import dashboard, plots
from pair.registry.export import dicom_zip, export_cohort, study_schema, write_table
from pair.registry.quality import quality_report, rules
from tests.registry.registry_data import CASES, build_hub

SYSTEM = Actor.system("test")
ANALYST = Actor(None, "analyst", None, "registry-analyst", "test")


@pytest.fixture
def hub(node: Node):  # type: ignore[no-untyped-def]
    return build_hub(node)


def _count(node: Node, **criteria: object) -> service.CohortCounts:
    with node.db.session() as s:
        return service.cohort_counts(s, SYSTEM, validate_query(dict(criteria)))


def test_counts_by_site_and_criteria(node: Node, hub) -> None:  # type: ignore[no-untyped-def]
    every = _count(node)
    assert (every.studies, every.patients) == (8, 8)
    assert [(s.code, s.studies) for s in every.by_site] == [
        ("HOSPA", 3),
        ("HOSPB", 3),
        ("HOSPC", 2),
    ]
    assert every.by_modality == {"CR": 5, "CT": 2, "DX": 1}
    assert every.by_category == {"rsna-cxr-covid: negative": 1, "rsna-cxr-covid: typical": 1}
    positive = _count(node, clinical={"covid19_positive": ["yes"]})  # case-insensitive value
    assert positive.studies == 4
    assert {s.code: s.studies for s in positive.by_site} == {"HOSPA": 2, "HOSPB": 1, "HOSPC": 1}
    assert _count(node, sites=["HOSPB"], modalities=["cr"]).studies == 2
    assert _count(node, modalities=["CT", "DX"]).studies == 3
    assert _count(node, study_date_from="2020-03-15", study_date_to="2020-03-31").studies == 3
    assert _count(node, submitted_from="2020-05-01").studies == 3  # B2 (Aug), C1, C2
    assert _count(node, age_min=60).studies == 4  # 70, 60, 150, 85
    assert _count(node, age_min=18, age_max=40).studies == 2  # 30, 20
    assert _count(node, clinical={"outcome": ["Discharged home"]}).studies == 6
    assert _count(node, reports={"rsna-cxr-covid": ["typical"]}).studies == 1
    # the same study through its CDE value code (RSNA CXR category, PAIR extension set)
    by_cde = _count(node, cdes={"PAIR-RDE10": ["PAIR-RDE10.1"]})
    assert by_cde.studies == 1 and by_cde.by_site[0].studies == 1
    both = _count(node, reports={"rsna-cxr-covid": ["typical", "negative"]}, sites=["HOSPA"])
    assert both.studies == 2


def test_drill_down_pages(node: Node, hub) -> None:  # type: ignore[no-untyped-def]
    q = CohortQuery(clinical={"covid19_positive": ["Yes"]})
    with node.db.session() as s:
        first = service.cohort_studies(s, ANALYST, q, limit=3, offset=0)
        rest = service.cohort_studies(s, ANALYST, q, limit=3, offset=3)
    assert first.total == rest.total == 4
    rows = first.items + rest.items
    assert [r["pseudonym"] for r in rows] == [hub.pseudonyms[k] for k in ("A1", "A3", "B1", "C1")]
    a1 = rows[0]
    assert (a1["site"], a1["modalities"], a1["study_date"]) == ("HOSPA", "CR", "20200311")
    assert a1["categories"] == "rsna-cxr-covid: typical"
    assert a1["study_uid"] == hub.studies["A1"]
    with node.db.session() as s, pytest.raises(Invalid, match="limit"):
        service.cohort_studies(s, ANALYST, q, limit=0)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"colour": ["red"]}, "colour"),
        ({"clinical": {"favourite_food": ["x"]}}, "clinical"),
        ({"clinical": {"sex": ["Unknown"]}}, "clinical"),
        ({"cdes": {"RDE0000000": ["x"]}}, "cdes"),
        ({"cdes": {"PAIR-RDE10": ["PAIR-RDE10.9"]}}, "cdes"),
        ({"reports": {"no-such-module": ["typical"]}}, "reports"),
        ({"reports": {"rsna-cxr-covid": ["purple"]}}, "reports"),
        ({"modalities": ["C T"]}, "modalities"),
        ({"study_date_from": "2020-13-01"}, "study_date_from"),
        ({"study_date_from": "2020-05-01", "study_date_to": "2020-04-01"}, "query"),
        ({"age_min": -1}, "age_min"),
    ],
)
def test_invalid_queries_name_the_criterion(data: dict[str, object], field: str) -> None:
    with pytest.raises(Invalid) as exc:
        validate_query(data)
    assert exc.value.details and exc.value.details[0]["field"].startswith(field)


def test_unknown_site_and_term_syntax(node: Node, hub) -> None:  # type: ignore[no-untyped-def]
    with node.db.session() as s, pytest.raises(Invalid, match="unknown site 'NOPE'"):
        service.cohort_counts(s, SYSTEM, CohortQuery(sites=["NOPE"]))
    with pytest.raises(Invalid, match="unknown criterion 'colour'"):
        from_terms([("colour", "red")])
    with pytest.raises(Invalid, match="not key=value"):
        parse_terms(["site"])
    q = parse_terms(
        ["site=HOSPA", "clinical.sex=Female", "report.rsna-cxr-covid=typical", "age_min=3"]
    )
    assert from_terms(q.to_terms()) == q


def test_exports_read_back_with_duckdb_and_pyarrow(node: Node, hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    q = CohortQuery(clinical={"covid19_positive": ["Yes"]})
    with node.db.session() as s:
        pq_file = export_cohort(s, ANALYST, q, "studies", "parquet", tmp_path).path
        csv_file = export_cohort(s, ANALYST, q, "studies", "csv", tmp_path).path
        manifest = export_cohort(s, ANALYST, q, "manifest", "parquet", tmp_path).path
    table = pq.read_table(pq_file)
    assert table.num_rows == 4
    assert str(table.schema.field("clinical_age_at_index").type) == "int64"
    con = duckdb.connect()
    by_site = con.execute(
        f"SELECT site, count(*), max(clinical_age_at_index) FROM '{pq_file}' "
        "GROUP BY site ORDER BY site"
    ).fetchall()
    assert by_site == [("HOSPA", 2, 45), ("HOSPB", 1, 60), ("HOSPC", 1, 85)]
    assert con.execute(f"SELECT count(*) FROM read_csv_auto('{csv_file}')").fetchone() == (4,)
    uids = con.execute(
        f"SELECT study_uid, count(DISTINCT sop_instance_uid) FROM '{manifest}' "
        "GROUP BY study_uid ORDER BY study_uid"
    ).fetchall()
    assert uids == sorted((hub.studies[k], 2) for k in ("A1", "A3", "B1", "C1"))
    with csv_file.open(encoding="utf-8") as fh:
        assert {r["pseudonym"] for r in csv.DictReader(fh)} == {
            hub.pseudonyms[k] for k in ("A1", "A3", "B1", "C1")
        }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_parquet_export_reads_in_spark_without_casts(node: Node, hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The registry's Parquet is read by Spark as it is (docs/registry.md): typed columns, the
    same rows DuckDB sees. A local Spark (one thread, loopback only, no UI) on Java 17."""
    from pyspark.sql import SparkSession

    with node.db.session() as s:
        pq_file = export_cohort(
            s, ANALYST, CohortQuery(clinical={"covid19_positive": ["Yes"]}), "studies", "parquet",
            tmp_path,
        ).path  # fmt: skip
    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "1")
        .getOrCreate()
    )
    try:
        df = spark.read.parquet(str(pq_file))
        types = dict(df.dtypes)
        assert types["clinical_age_at_index"] == "bigint" and types["site"] == "string"
        rows = df.groupBy("site").agg({"*": "count", "clinical_age_at_index": "max"}).collect()
        by_site = sorted((r["site"], r["count(1)"], r["max(clinical_age_at_index)"]) for r in rows)
    finally:
        spark.stop()
    assert by_site == [("HOSPA", 2, 45), ("HOSPB", 1, 60), ("HOSPC", 1, 85)]


def test_export_never_leaves_a_half_written_file(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous export")
    bad = [{"study_uid": "1", "clinical_age_at_index": "not a number"}]
    with pytest.raises(Exception):  # noqa: B017 - pyarrow refuses the value
        write_table(bad, study_schema(), "parquet", target)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_dicom_zip_needs_approval_and_holds_the_stored_files(node: Node, hub) -> None:  # type: ignore[no-untyped-def]
    with node.db.session() as s:
        from pair.accounts import service as accounts

        f = accounts.get_facility(s, "HOSPA")
        user = accounts.create_user(s, f, "ana-lyst", "registry-analyst", "Ward7-Lumen-Quartz")
        analyst = Actor(user.id, user.name, f.id, "registry-analyst", "test")
    q = CohortQuery(sites=["HOSPA"], modalities=["CT"])
    with node.db.session() as s, pytest.raises(Forbidden, match="approval"):
        dicom_zip(s, analyst, q, node.settings.storage_dir, 100)
    with node.db.session() as s:
        service.approve(s, SYSTEM, "ana-lyst", "DUA 2026-17")
    with node.db.session() as s:
        z = dicom_zip(s, analyst, q, node.settings.storage_dir, 100)
    data = b"".join(z.stream())
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        assert names[-1] == "manifest.csv" and len(names) == 3
        for name in names[:-1]:
            sop = name.rsplit("/", 1)[1].removesuffix(".dcm")
            assert name.startswith(f"HOSPA/{hub.pseudonyms['A2']}/{hub.studies['A2']}/")
            assert zf.read(name) == hub.files[sop]
    with node.db.session() as s, pytest.raises(Invalid, match="at most 1"):
        dicom_zip(s, analyst, q, node.settings.storage_dir, 1)
    with node.db.session() as s:
        service.revoke(s, SYSTEM, "ana-lyst")
    with node.db.session() as s, pytest.raises(Forbidden):
        dicom_zip(s, analyst, q, node.settings.storage_dir, 100)


def test_quality_findings_each_from_a_crafted_row(node: Node, hub) -> None:  # type: ignore[no-untyped-def]
    with node.db.session() as s:
        report = quality_report(s, SYSTEM, 30, today=date(2026, 12, 6))
    by_site = {site.code: site for site in report}

    def findings(code: str) -> dict[tuple[str, str], tuple[int, list[str]]]:
        return {(f.check, f.element): (f.count, f.examples) for f in by_site[code].findings}

    a, b, c = findings("HOSPA"), findings("HOSPB"), findings("HOSPC")
    assert a == {("missing", "outcome"): (1, [f"{hub.pseudonyms['A3']} {hub.studies['A3']}"])}
    assert set(b) == {
        ("inconsistent-date", "test_days_from_index>days_to_hospital_discharge"),
        ("late-submission", "submitted_at"),
        ("out-of-range", "age_at_index"),
    }
    assert b[("late-submission", "submitted_at")][1] == [
        f"{hub.pseudonyms['B2']} {hub.studies['B2']}"
    ]
    assert b[("out-of-range", "age_at_index")][1][0].startswith(hub.pseudonyms["B3"])
    assert c[("inconsistent-date", "study_date")][1][0].startswith(hub.pseudonyms["C1"])
    required = rules()["required"]["clinical"]
    assert {e for (chk, e) in c if chk == "missing"} == set(required)  # C2: no record at all
    assert by_site["HOSPC"].quarantined == 1
    assert by_site["HOSPC"].instances == 4
    assert by_site["HOSPC"].quarantine_rate == pytest.approx(1 / 5)
    assert by_site["HOSPA"].quarantine_rate == 0
    # a longer threshold: B2 (131 days late) is late at 30 days, not at 200
    with node.db.session() as s:
        relaxed = quality_report(s, SYSTEM, 200, today=date(2026, 12, 6))
    assert not [f for f in relaxed[1].findings if f.check == "late-submission"]


def test_facility_admin_sees_only_its_own_quality(node: Node, hub) -> None:  # type: ignore[no-untyped-def]
    admin_b = Actor(999, "admin-b", hub.facilities["B"], "admin", "test")
    with node.db.session() as s:
        assert [x.code for x in quality_report(s, admin_b, 30)] == ["HOSPB"]
        with pytest.raises(Forbidden):
            quality_report(s, Actor(998, "rad", hub.facilities["B"], "radiologist", "t"), 30)


def test_dashboard_aggregates_and_plots(node: Node, hub) -> None:  # type: ignore[no-untyped-def]
    with node.db.session() as s:
        d = dashboard(s, Actor(5, "rad", hub.facilities["A"], "radiologist", "test"))
    assert d.studies == 8 and d.sites == ["HOSPA", "HOSPB", "HOSPC"]
    assert d.over_time["HOSPA"] == {"2020-03": 2, "2020-04": 1}
    pos = {p.site: p for p in d.positivity}
    assert (pos["HOSPA"].positive, pos["HOSPA"].tested) == (2, 3)
    # Wilson 95% interval for 2/3: 0.2077-0.9385 (Newcombe 1998, method 3; statsmodels
    # proportion_confint(2, 3, method="wilson") gives the same)
    assert pos["HOSPA"].low == pytest.approx(0.2077, abs=1e-4)
    assert pos["HOSPA"].high == pytest.approx(0.9385, abs=1e-4)
    assert pos["HOSPC"].tested == 1 and not math.isnan(pos["HOSPC"].low)
    assert d.demographics["40-59"] == {"Female": 1}
    assert d.demographics["unknown"] == {"unknown": 1}  # C2 without clinical data
    assert d.modality_vendor == {
        "CR / VendorA": 2,
        "CT / VendorA": 1,
        "CR / VendorB": 2,
        "DX / VendorB": 1,
        "CT / VendorC": 1,
        "CR / VendorC": 1,
    }
    images = plots(d)
    assert len(images) == 5
    assert all(url.startswith("data:image/svg+xml;base64,") for url in images.values())


def test_roles_of_the_registry(node: Node, hub) -> None:  # type: ignore[no-untyped-def]
    q = CohortQuery()
    researcher = Actor(7, "res", hub.facilities["A"], "researcher", "test")
    operator = Actor(8, "op", None, "node-operator", "test")
    site_node = Actor(9, "site", hub.facilities["A"], "site-node", "test")
    with node.db.session() as s:
        assert service.cohort_counts(s, researcher, q).studies == len(CASES)
        with pytest.raises(Forbidden):
            service.cohort_studies(s, researcher, q)
        for who in (operator, site_node):
            with pytest.raises(Forbidden):
                service.cohort_counts(s, who, q)
        hub_op = Actor(10, "hub", hub.facilities["A"], "hub-operator", "test")
        assert service.cohort_studies(s, hub_op, q).total == len(CASES)
        with pytest.raises(Forbidden):
            service.approve(s, ANALYST, "anyone")
