"""``pair hub ...`` and ``pair share ...``: the operator's membership commands, a site's policy
and status, and their refusals (a message and an exit code, never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pair.accounts import service as accounts
from pair.cli.main import app
from pair.core.errors import Invalid
from pair.core.node import open_node
from pair.sharing import membership
from pair.sharing.pusher import check_hub_url
from tests.accounts.test_cli import clean_failure

runner = CliRunner()


def test_hub_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAIR_HUB_URL", raising=False)
    d = str(tmp_path / "hub")
    node = open_node(d)
    with node.db.session() as s:
        membership.register(s, "Site A", "SITEA", contact="ops@site-a.example")
    node.close()
    listed = runner.invoke(app, ["hub", "list", "--data-dir", d])
    assert listed.exit_code == 0 and "SITEA" in listed.output and "pending" in listed.output
    approved = runner.invoke(app, ["hub", "approve", "SITEA", "--data-dir", d])
    assert approved.exit_code == 0, approved.output
    token = approved.stdout.strip().splitlines()[-1]
    assert token.startswith("pair_") or len(token) > 20
    node = open_node(d)
    with node.db.session() as s:
        assert accounts.authenticate_token(s, token).role == "site-node"
    node.close()
    clean_failure(runner.invoke(app, ["hub", "approve", "SITEA", "--data-dir", d]), 5, "approved")
    assert runner.invoke(app, ["hub", "revoke", "SITEA", "--data-dir", d]).exit_code == 0
    clean_failure(runner.invoke(app, ["hub", "approve", "NOPE", "--data-dir", d]), 4, "NOPE")
    refused = runner.invoke(
        app,
        ["hub", "register", "--hub-url", "http://hub.example.org", "--name", "X", "--code", "X"],
    )
    clean_failure(refused, 2, "https")


def test_share_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAIR_HUB_URL", raising=False)
    monkeypatch.delenv("PAIR_HUB_TOKEN", raising=False)
    d = str(tmp_path / "site")
    node = open_node(d)
    with node.db.session() as s:
        accounts.create_facility(s, "Hospital A", "HOSPA")
    node.close()
    shown = runner.invoke(app, ["share", "policy", "--facility", "HOSPA", "--data-dir", d])
    assert shown.exit_code == 0 and "none" in shown.output
    set_all = runner.invoke(app, ["share", "policy", "all", "--facility", "HOSPA", "--data-dir", d])
    assert set_all.exit_code == 0 and "all" in set_all.output, set_all.output
    bad = runner.invoke(app, ["share", "policy", "most", "--facility", "HOSPA", "--data-dir", d])
    clean_failure(bad, 2, "most")
    status = runner.invoke(app, ["share", "status", "--facility", "HOSPA", "--data-dir", d])
    assert status.exit_code == 0 and "policy all" in status.output
    clean_failure(
        runner.invoke(app, ["share", "push", "--once", "--data-dir", d]), 2, "PAIR_HUB_URL"
    )


def test_hub_url_must_be_https_except_loopback() -> None:
    assert check_hub_url("https://hub.example.org/") == "https://hub.example.org"
    assert check_hub_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert check_hub_url("http://localhost:8000") == "http://localhost:8000"
    assert check_hub_url("http://[::1]:8000") == "http://[::1]:8000"
    for bad in ("http://hub.example.org", "http://10.0.0.5", "ftp://hub", "hub.example.org"):
        with pytest.raises(Invalid):
            check_hub_url(bad)
