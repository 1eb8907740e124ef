"""``pair fl provision`` from the hub's member sites, PAIR's site policies, and bad input.

Runs FLARE's real provisioner (about a second per call); no processes are started here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from pair.accounts import service
from pair.cli import common
from pair.core.node import Node
from pair.federated.cli_deploy import register
from pair.federated.flare.provision import (
    AdminParticipant,
    Consortium,
    ProvisionError,
    SiteParticipant,
    flare_name,
    project_dict,
    provision,
    root_ca_fingerprint,
)

runner = CliRunner()
fl = typer.Typer()
register(fl)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 250)
    monkeypatch.setattr(common.err_console, "width", 250)


def members(node: Node) -> None:
    """Two members with an active site-node account, one whose account is disabled, one
    facility without a site-node account at all."""
    with node.db.session() as s:
        for name, code, role, active in [
            ("General Hospital", "GH1", "site-node", True),
            ("Lakeside Clinic", "LAKE", "site-node", True),
            ("Dormant Clinic", "DORM", "site-node", False),
            ("Local Only", "LOC", "radiologist", True),
        ]:
            facility = service.create_facility(s, name, code)
            user = service.create_user(s, facility, f"node-{code.lower()}", role)
            user.active = active
        s.commit()


def test_provision_kits_for_member_sites(sqlite_node: Node, tmp_path: Path) -> None:
    members(sqlite_node)
    out = tmp_path / "prov"
    args = ["provision", "--data-dir", str(sqlite_node.settings.data_dir), "--out", str(out)]
    args += [
        "--server-host",
        "hub.pair.example",
        "--lead",
        "lead@pair.example",
        "--operator",
        "ops@pair.example",
    ]
    result = runner.invoke(fl, args)
    assert result.exit_code == 0, result.output
    prod = out / "pair" / "prod_00"
    assert sorted(p.name for p in prod.iterdir()) == sorted(
        ["hub.pair.example", "gh1", "lake", "lead@pair.example", "ops@pair.example"]
    )
    project = yaml.safe_load((out / "project.yml").read_text())
    orgs = {p["name"]: p["org"] for p in project["participants"] if p["type"] == "client"}
    assert orgs == {"gh1": "GH1", "lake": "LAKE"}
    client = json.loads((prod / "gh1" / "startup" / "fed_client.json").read_text())
    assert client["client"]["connection_security"] == "mtls"
    assert client["servers"][0]["service"]["target"] == "hub.pair.example:8002"

    # the fingerprint printed is the root CA's, as openssl computes it (reference implementation)
    pem = prod / "gh1" / "startup" / "rootCA.pem"
    openssl = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()  # "sha256 Fingerprint=AA:BB:..."
    expected = "SHA256:" + openssl.split("=", 1)[1]
    assert root_ca_fingerprint(pem) == expected
    assert f"root CA fingerprint: {expected}" in result.output


def test_site_policies_lead_only_no_custom_code(tmp_path: Path) -> None:
    kits = provision(_consortium(), tmp_path)
    local = kits.sites["site-a"] / "local"
    authz = json.loads((local / "authorization.json").read_text())["permissions"]
    assert authz["lead"]["submit_job"] == "any"
    assert all(rules["byoc"] == "none" for role, rules in authz.items() if role != "member")
    assert [role for role, rules in authz.items() if rules.get("submit_job", "none") != "none"] == [
        "lead"
    ]
    privacy = json.loads((local / "privacy.json").read_text())
    assert privacy["default_scope"] in [scope["name"] for scope in privacy["scopes"]]
    resources = json.loads((local / "resources.json").read_text())
    default = json.loads((local / "resources.json.default").read_text())
    assert set(default["class_allow_list"]) < set(resources["class_allow_list"])
    assert "pair.federated." in resources["class_allow_list"]
    assert resources["class_list_enforcement_mode"] == "enforce"
    # the hub enforces the same submission rules
    assert json.loads((kits.server / "local" / "authorization.json").read_text())[
        "permissions"
    ] == {**authz}


def test_site_policies_command_and_bad_kit(tmp_path: Path) -> None:
    kits = provision(_consortium(), tmp_path, site_policies=False)
    kit = kits.sites["site-b"]
    assert not (kit / "local" / "authorization.json").exists()
    result = runner.invoke(fl, ["site-policies", str(kit)])
    assert result.exit_code == 0, result.output
    assert (
        json.loads((kit / "local" / "authorization.json").read_text())["permissions"]["lead"][
            "byoc"
        ]
        == "none"
    )
    result = runner.invoke(fl, ["site-policies", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "not a FLARE startup kit" in result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sites": []}, "no member sites"),
        ({"admins": [AdminParticipant("ops@pair.test", "hub", "project_admin")]}, "no lead"),
        ({"admins": [AdminParticipant("not-an-email", "hub", "lead")]}, "e-mail"),
        ({"server_host": "hub host"}, "not a host name"),
        ({"sites": [SiteParticipant("a", "x"), SiteParticipant("a", "y")]}, "duplicate"),
        ({"fed_learn_port": 0}, "out of range"),
    ],
)
def test_bad_consortium_is_refused_before_writing(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    bad = Consortium(**{**_consortium().__dict__, **change})  # type: ignore[arg-type]
    with pytest.raises(ProvisionError, match=message):
        project_dict(bad)
    with pytest.raises(ProvisionError):
        provision(bad, tmp_path / "ws")
    assert not (tmp_path / "ws").exists(), "nothing written for a refused consortium"


def test_no_member_sites_is_a_clear_cli_error(sqlite_node: Node, tmp_path: Path) -> None:
    args = [
        "provision",
        "--data-dir",
        str(sqlite_node.settings.data_dir),
        "--out",
        str(tmp_path / "p"),
    ]
    result = runner.invoke(
        fl, [*args, "--server-host", "hub.example", "--lead", "lead@pair.example"]
    )
    assert result.exit_code == 1
    assert "no member sites" in result.output


def test_run_and_status_refuse_a_folder_that_is_not_an_admin_kit(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "meta.json").write_text("{}")
    result = runner.invoke(fl, ["run", str(job), "--admin-kit", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a FLARE admin kit" in result.output
    result = runner.invoke(fl, ["status", "--admin-kit", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a FLARE admin kit" in result.output
    lead_kit = provision(_consortium(), tmp_path / "ws").admins["lead@pair.test"]
    result = runner.invoke(
        fl, ["run", str(tmp_path / "missing.yaml"), "--admin-kit", str(lead_kit)]
    )
    assert result.exit_code == 2  # Invalid input
    assert "no such study file or job folder" in result.output


def test_flare_names_from_facility_codes() -> None:
    assert flare_name("GH-1") == "gh-1"
    assert flare_name(" St. Mary's ") == "st-mary-s"
    with pytest.raises(ProvisionError):
        flare_name("***")


def _consortium() -> Consortium:
    return Consortium(
        project="pairtest",
        server_host="localhost",
        sites=[SiteParticipant("site-a", "org_a"), SiteParticipant("site-b", "org_b")],
        admins=[AdminParticipant("lead@pair.test", "hub", "lead")],
    )
