"""HTTP API (TestClient on SQLite and PostgreSQL) and the ``pair algorithm`` commands."""

from __future__ import annotations

import csv
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from pair.accounts import service as accounts
from pair.algorithms.models import Algorithm
from pair.audit.models import AuditEvent
from pair.cli.main import app as cli_app
from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.web.app import create_app
from tests.algorithms.algo_builders import DEMO_DIR, manifest, mean_model, write_package, zip_folder


def _tokens(node: Node) -> dict[str, str]:
    out = {}
    with node.db.session() as s:
        f = accounts.create_facility(s, "General Hospital")
        for role in ("evaluator", "radiologist", "admin"):
            u = accounts.create_user(s, f, f"u-{role}", role)
            out[role] = accounts.create_token(s, u, "t")[1]
    return out


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _db(node: Node) -> dict[str, object]:
    """The same database as ``node`` (the fixture names PostgreSQL by URL)."""
    url = node.settings.database_url
    return {"database_url": url} if url else {}


def _upload(client: TestClient, token: str, data: bytes) -> httpx.Response:
    files = {"package": ("pkg.zip", data, "application/zip")}
    return client.post("/api/algorithms", files=files, headers=_auth(token))


def test_api_submit_list_versions(node: Node, tmp_path: Path) -> None:
    tokens = _tokens(node)
    client = TestClient(create_app(node))
    demo = zip_folder(DEMO_DIR)

    r = _upload(client, tokens["radiologist"], demo)
    assert r.status_code == 403
    assert client.get("/api/algorithms").status_code == 401

    r = _upload(client, tokens["evaluator"], demo)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["id"], body["version"], body["submitted_by"]) == (
        "demo-cxr-opacity",
        "1.0.0",
        "u-evaluator",
    )
    assert _upload(client, tokens["admin"], demo).status_code == 200

    v2 = write_package(
        tmp_path / "v2", manifest(id="demo-cxr-opacity", version="1.1.0"), mean_model()
    )
    assert _upload(client, tokens["evaluator"], zip_folder(v2)).status_code == 201
    clash = write_package(
        tmp_path / "clash",
        manifest(id="demo-cxr-opacity", version="1.1.0"),
        mean_model(out_width=2),
    )
    r = _upload(client, tokens["evaluator"], zip_folder(clash))
    assert r.status_code == 409 and "new version" in r.json()["message"]

    listing = client.get("/api/algorithms", headers=_auth(tokens["radiologist"])).json()
    assert [(a["id"], a["version"]) for a in listing] == [
        ("demo-cxr-opacity", "1.1.0"),
        ("demo-cxr-opacity", "1.0.0"),
    ]
    versions = client.get(
        "/api/algorithms/demo-cxr-opacity", headers=_auth(tokens["radiologist"])
    ).json()
    assert versions["latest"] == "1.1.0" and len(versions["versions"]) == 2
    assert client.get("/api/algorithms/nope", headers=_auth(tokens["admin"])).status_code == 404
    one = client.get("/api/algorithms/demo-cxr-opacity/1.0.0", headers=_auth(tokens["admin"]))
    assert one.status_code == 200 and one.json()["model_card"].startswith("# DEMO")
    latest = client.get("/api/algorithms/demo-cxr-opacity/latest", headers=_auth(tokens["admin"]))
    assert (
        latest.json()["version"] == "1.1.0" and latest.json()["model_card"] == "# Test model card\n"
    )
    missing = client.get("/api/algorithms/demo-cxr-opacity/3.0.0", headers=_auth(tokens["admin"]))
    assert missing.status_code == 404 and "known versions: 1.1.0, 1.0.0" in missing.text
    with node.db.session() as s:
        actions = s.scalars(
            select(AuditEvent.action).where(AuditEvent.action == "algorithm.add")
        ).all()
        assert len(actions) == 2


def test_api_refusals(node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = _tokens(node)
    client = TestClient(create_app(node))
    bad = write_package(
        tmp_path / "bad", manifest(**{"model.sha256": "ab" * 32}), mean_model(), fix_sha=False
    )
    r = _upload(client, tokens["evaluator"], zip_folder(bad))
    assert r.status_code == 422
    problems = r.json()["details"]["problems"]
    assert problems[0].startswith("checksum mismatch")
    r = _upload(client, tokens["evaluator"], b"this is not a zip")
    assert r.status_code == 422 and "not a valid zip" in r.text
    # the limit comes from the node's settings, read when the node opens
    monkeypatch.setenv("PAIR_ALGORITHM_MAX_PACKAGE_BYTES", "1000")
    small = open_node(settings=get_settings(node.settings.data_dir, **_db(node)))
    try:
        assert small.settings.algorithms.max_package_bytes == 1000
        r = _upload(TestClient(create_app(small)), tokens["evaluator"], zip_folder(DEMO_DIR))
        assert r.status_code == 413
    finally:
        small.close()
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Algorithm)) == 0


def test_cli_add_list_show_schema(tmp_path: Path) -> None:
    runner = CliRunner()
    d = str(tmp_path / "node")
    r = runner.invoke(cli_app, ["algorithm", "add-demo", "--data-dir", d])
    assert r.exit_code == 0, r.output
    assert "demo-cxr-opacity 1.0.0 registered" in r.output
    v2 = write_package(
        tmp_path / "v2", manifest(id="demo-cxr-opacity", version="1.1.0"), mean_model()
    )
    (tmp_path / "v2.zip").write_bytes(zip_folder(v2, prefix="v2/"))
    r = runner.invoke(cli_app, ["algorithm", "add", "--data-dir", d, str(tmp_path / "v2.zip")])
    assert r.exit_code == 0 and "1.1.0 registered" in r.output, r.output
    r = runner.invoke(cli_app, ["algorithm", "list", "--data-dir", d])
    assert r.exit_code == 0 and "demo-cxr" in r.output
    r = runner.invoke(cli_app, ["algorithm", "show", "--data-dir", d, "demo-cxr-opacity@1.0.0"])
    assert r.exit_code == 0 and '"positive_class": "present"' in r.output
    r = runner.invoke(cli_app, ["algorithm", "show", "--data-dir", d, "demo-cxr-opacity"])
    assert r.exit_code == 0 and '"version": "1.1.0"' in r.output
    bad = write_package(tmp_path / "bad", manifest(**{"input.tensor_name": "x"}), mean_model())
    r = runner.invoke(cli_app, ["algorithm", "add", "--data-dir", d, str(bad)])
    assert r.exit_code == 2
    assert "input.tensor_name 'x' is not an input of the model" in r.output
    r = runner.invoke(cli_app, ["algorithm", "check", "--data-dir", d, str(DEMO_DIR)])
    assert r.exit_code == 0 and "is valid" in r.output
    r = runner.invoke(cli_app, ["algorithm", "schema"])
    assert r.exit_code == 0 and '"format_version"' in r.output


def test_cli_run_groups_cases_and_writes_csv(tmp_path: Path, shared_data: Path) -> None:
    from pair.algorithms.wrap import png_to_dicom

    runner = CliRunner()
    d = str(tmp_path / "node")
    assert (
        runner.invoke(cli_app, ["algorithm", "add", "--data-dir", d, str(DEMO_DIR)]).exit_code == 0
    )
    series = tmp_path / "series"
    for i, png in enumerate(sorted((shared_data / "images").glob("*.png"))[:3]):
        png_to_dicom(png, series / f"{i}.dcm", series_uid="2.25.1234", study_uid="2.25.99")
    out = tmp_path / "results.csv"
    args = [
        "algorithm",
        "run",
        "--data-dir",
        d,
        "demo-cxr-opacity",
        str(series),
        str(shared_data / "dicom/pydicom_CT_small.dcm"),
        "--group",
        "series",
        "--out",
        str(out),
    ]
    r = runner.invoke(cli_app, args)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert (rows[0]["case_id"], rows[0]["n_images"], len(rows)) == ("2.25.1234", "3", 2)
    assert rows[0]["error"] == "" and 0 <= float(rows[0]["score"]) <= 1
    assert rows[1]["error"] == "wrong modality"
    assert "1 case(s) done, 1 failed" in r.output
    again = runner.invoke(cli_app, [*args[:-2]])
    assert again.exit_code == 0 and ",1\n" in again.stdout  # cached column set on the re-run
