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


def test_hub_quota_override_per_facility(tmp_path: Path) -> None:
    from pydicom.uid import generate_uid
    from sqlalchemy import select

    from pair.audit.models import AuditEvent
    from pair.audit.service import Actor
    from pair.core.errors import LimitExceeded
    from pair.repository.ingest import Payload, ingest_batch
    from pair.sharing.feed.studies import set_default_quota
    from tests.factories import ct_instance, to_bytes

    d = str(tmp_path / "hub")
    node = open_node(d)
    with node.db.session() as s:
        fa = accounts.create_facility(s, "Hospital A", "HOSPA").id
        accounts.create_facility(s, "Hospital B", "HOSPB")
        set_default_quota(s, 10, 0)  # what `pair serve --role hub` writes from PAIR_HUB_QUOTA_*
    node.close()

    def quota(*args: str) -> str:
        out = runner.invoke(app, ["hub", "quota", *args, "--data-dir", d])
        assert out.exit_code == 0, out.output
        return out.output

    assert "default quota: max instances 10, max bytes unlimited" in quota("HOSPA")
    shown = quota("HOSPA", "--max-instances", "2")
    assert "own quota: max instances 2, max bytes unlimited; stored 0" in shown
    assert "own quota: max instances 2, max bytes 5000000" in quota(
        "HOSPA", "--max-bytes", "5000000"
    )
    assert "default quota: max instances 10" in quota("HOSPB")  # other facilities keep it

    node = open_node(d)
    try:
        study, series = generate_uid(), generate_uid()
        payloads = [
            Payload(
                to_bytes(ct_instance(study_uid=study, series_uid=series, index=i, size=8)), str(i)
            )
            for i in (1, 2, 3)
        ]
        actor = Actor.system("test", facility_id=fa)
        with pytest.raises(LimitExceeded):  # 3 instances past its own quota of 2
            ingest_batch(node, fa, payloads, "test", actor)
        with node.db.session() as s:
            events = s.scalars(
                select(AuditEvent)
                .where(AuditEvent.action.like("hub.quota.%"))
                .order_by(AuditEvent.id)
            ).all()
            assert [(e.action, e.facility_id, e.user_name) for e in events] == [
                ("hub.quota.set", fa, "hub-operator (cli)"),
                ("hub.quota.set", fa, "hub-operator (cli)"),
            ]
            assert events[1].detail["before"] == {"max_instances": 2, "max_bytes": 0}
    finally:
        node.close()

    assert "default quota: max instances 10" in quota("HOSPA", "--clear")
    clean_failure(
        runner.invoke(
            app, ["hub", "quota", "HOSPA", "--clear", "--max-bytes", "1", "--data-dir", d]
        ),
        2,
        "--clear alone",
    )
    clean_failure(runner.invoke(app, ["hub", "quota", "NOPE", "--data-dir", d]), 4, "NOPE")
    negative = runner.invoke(
        app, ["hub", "quota", "HOSPA", "--max-instances", "-1", "--data-dir", d]
    )
    assert negative.exit_code == 2
