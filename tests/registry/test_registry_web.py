"""Registry API, pages and CLI: analysts query and export, facility users see aggregates only,
DICOM zip after `pair registry approve`, precise 422s, unauthorized roles refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from pair.accounts import service as accounts
from pair.accounts.models import User
from pair.audit.models import AuditEvent
from pair.cli.main import app
from pair.core.node import Node
from pair.registry.models import RegistryApproval
from pair.web.app import create_app
from tests.registry.registry_data import build_hub

USERS = {
    "analyst": ("A", "registry-analyst"),
    "researcher": ("B", "researcher"),
    "radiologist": ("B", "radiologist"),
    "admin-b": ("B", "admin"),
    "hubop": ("A", "hub-operator"),
    "operator": ("A", "node-operator"),
    "site-node": ("C", "site-node"),
}


@pytest.fixture
def web(sqlite_node: Node):  # type: ignore[no-untyped-def]
    hub = build_hub(sqlite_node, USERS)
    with sqlite_node.db.session() as s:
        headers = {
            name: {
                "Authorization": "Bearer "
                + accounts.create_token(s, s.scalars(select(User).where(User.name == name)).one())[
                    1
                ]
            }
            for name in USERS
        }
    return TestClient(create_app(sqlite_node)), headers, hub


def test_analyst_counts_drills_down_and_exports(web, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, h, hub = web
    r = client.get("/api/registry/cohort?clinical.covid19_positive=Yes", headers=h["analyst"])
    assert r.status_code == 200, r.text
    assert r.json()["studies"] == 4
    assert {s["code"]: s["studies"] for s in r.json()["by_site"]} == {
        "HOSPA": 2,
        "HOSPB": 1,
        "HOSPC": 1,
    }
    r = client.post(
        "/api/registry/cohort",
        json={"sites": ["HOSPB"], "modalities": ["CR"]},
        headers=h["analyst"],
    )
    assert r.status_code == 200 and r.json()["studies"] == 2
    r = client.get("/api/registry/cohort/studies?site=HOSPA&limit=2&offset=2", headers=h["analyst"])
    assert r.status_code == 200
    assert r.json()["total"] == 3 and [x["pseudonym"] for x in r.json()["items"]] == [
        hub.pseudonyms["A3"]
    ]
    r = client.get("/api/registry/exports/studies.parquet?site=HOSPB", headers=h["analyst"])
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    out = tmp_path / "b.parquet"
    out.write_bytes(r.content)
    assert duckdb.sql(f"SELECT count(*) FROM '{out}'").fetchall() == [(3,)]
    r = client.get("/api/registry/exports/manifest.csv?site=HOSPC", headers=h["analyst"])
    assert r.status_code == 200 and r.text.count("\n") == 1 + 4  # header + 2 studies x 2
    r = client.get("/api/registry/quality", headers=h["hubop"])
    assert [s["site"] for s in r.json()["sites"]] == ["HOSPA", "HOSPB", "HOSPC"]


BAD = [
    ("/api/registry/cohort?colour=red", "unknown criterion 'colour'"),
    ("/api/registry/cohort?cde.RDE0000000=x", "unknown CDE 'RDE0000000'"),
    ("/api/registry/cohort?cde.PAIR-RDE10=PAIR-RDE10.9", "has no value 'PAIR-RDE10.9'"),
    ("/api/registry/cohort?clinical.sex=Unknown", "sex: 'Unknown' is not allowed"),
    ("/api/registry/cohort?report.rsna-cxr-covid=purple", "category 'purple'"),
    ("/api/registry/cohort?site=NOPE", "unknown site 'NOPE'"),
    ("/api/registry/cohort?study_date_from=2020-02-30", "study_date_from"),
    ("/api/registry/exports/studies.xlsx", "Unknown export 'studies.xlsx'"),
    ("/api/registry/cohort/studies?limit=0", "limit must be"),
]


def test_bad_queries_are_precise_422s(web) -> None:  # type: ignore[no-untyped-def]
    client, h, _ = web
    for url, needle in BAD:
        r = client.get(url, headers=h["analyst"])
        assert r.status_code == 422, (url, r.text)
        assert needle in r.text, (url, r.text)
    r = client.post(
        "/api/registry/cohort", json={"clinical": {"mood": ["x"]}}, headers=h["analyst"]
    )
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "clinical"


def test_who_may_do_what(web) -> None:  # type: ignore[no-untyped-def]
    client, h, _ = web
    expect = {
        "/api/registry/dashboard": {"analyst", "researcher", "radiologist", "admin-b", "hubop"},
        "/api/registry/cohort": {"analyst", "researcher", "radiologist", "admin-b", "hubop"},
        "/api/registry/cohort/studies": {"analyst", "hubop"},
        "/api/registry/exports/studies.csv": {"analyst", "hubop"},
        "/api/registry/quality": {"analyst", "hubop", "admin-b"},
        "/api/registry/dicom.zip": set(),  # nobody is approved yet
    }
    for url, allowed in expect.items():
        for who in USERS:
            r = client.get(url, headers=h[who])
            assert r.status_code == (200 if who in allowed else 403), (url, who, r.text)
    assert client.get("/api/registry/cohort").status_code == 401
    # a facility admin's quality report is its own site's only
    sites = client.get("/api/registry/quality", headers=h["admin-b"]).json()["sites"]
    assert [s["site"] for s in sites] == ["HOSPB"]


def test_cli_query_export_quality_and_approval(web, sqlite_node: Node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, h, hub = web
    data_dir = str(sqlite_node.settings.data_dir)
    runner = CliRunner()
    r = runner.invoke(
        app, ["registry", "query", "-d", data_dir, "--where", "modality=CT", "--rows", "5"]
    )
    assert r.exit_code == 0, r.output
    assert "2 studies, 2 patients" in r.output and hub.pseudonyms["C1"] in r.output
    r = runner.invoke(app, ["registry", "query", "-d", data_dir, "--where", "cde.RDE0=x"])
    assert r.exit_code != 0 and "unknown CDE 'RDE0'" in r.output
    out = tmp_path / "cohort.parquet"
    r = runner.invoke(
        app,
        [
            "registry",
            "export",
            "-d",
            data_dir,
            "--out",
            str(out),
            "--format",
            "parquet",
            "--where",
            "clinical.covid19_positive=No",
        ],
    )
    assert r.exit_code == 0, r.output
    assert duckdb.sql(f"SELECT count(*) FROM '{out}'").fetchall() == [(3,)]
    r = runner.invoke(app, ["registry", "quality", "-d", data_dir])
    assert r.exit_code == 0 and "late-submission" in r.output
    # the radiologist cannot be approved; the researcher can, then downloads
    r = runner.invoke(app, ["registry", "approve", "radiologist", "-d", data_dir])
    assert r.exit_code != 0 and "only registry analysts and researchers" in r.output
    r = runner.invoke(app, ["registry", "approve", "researcher", "-d", data_dir, "--note", "DUA-7"])
    assert r.exit_code == 0, r.output
    r = client.get("/api/registry/dicom.zip?site=HOSPA&modality=CT", headers=h["researcher"])
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert len(zf.namelist()) == 3 and "manifest.csv" in zf.namelist()
    assert client.get("/api/registry/dicom.zip", headers=h["analyst"]).status_code == 403
    r = runner.invoke(app, ["registry", "revoke", "researcher", "-d", data_dir])
    assert r.exit_code == 0
    assert client.get("/api/registry/dicom.zip", headers=h["researcher"]).status_code == 403
    with sqlite_node.db.session() as s:
        assert s.scalar(select(RegistryApproval.note)) == "DUA-7"
        actions = set(s.scalars(select(AuditEvent.action)))
    assert {"registry.approve", "registry.revoke", "registry.dicom", "registry.export"} <= actions


def test_pages(web) -> None:  # type: ignore[no-untyped-def]
    client, h, _ = web
    r = client.get("/registry", headers=h["radiologist"])
    assert r.status_code == 200 and r.text.count('class="registry-plot"') == 5
    assert "Site Alpha" not in r.text  # aggregated views name sites by code
    r = client.get("/registry/cohort?site=HOSPA&run=1", headers=h["radiologist"])
    assert r.status_code == 200 and 'id="counts-by-site"' in r.text
    assert 'id="drill-down"' not in r.text and "/api/registry/exports/" not in r.text
    r = client.get("/registry/cohort?site=HOSPA&run=1", headers=h["analyst"])
    assert 'id="drill-down"' in r.text and "/api/registry/exports/studies.csv?site=HOSPA" in r.text
    r = client.get("/registry/cohort?terms=cde.NOPE%3Dx&run=1", headers=h["analyst"])
    assert r.status_code == 422 and "unknown CDE" in r.text
    assert client.get("/registry/quality", headers=h["radiologist"]).status_code == 403
    assert client.get("/registry/quality", headers=h["admin-b"]).status_code == 200
