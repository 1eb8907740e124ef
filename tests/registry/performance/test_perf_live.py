"""End to end with real processes: the hub is a `pair serve` process, its operator issues the
site's secret with `pair registry feedback-secret`, and a site node evaluates the demo algorithm
and sends its feedback with the existing site-side submit (evaluation.runs.service)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.evaluation import feedback as fb
from pair.evaluation.runs import service
from pair.evaluation.runs.models import EvaluationRun
from pair.registry.performance import receive
from tests.conftest import LiveNode
from tests.evaluation.runs.evalrun_data import create_demo_run, demo_setup
from tests.registry.performance.perf_data import PASSWORD


def _hub_accounts(hub: LiveNode) -> None:
    """A site-node account of Hospital A and a registry analyst at the hub."""
    node = open_node(settings=get_settings(hub.data_dir, database_url=hub.database_url))
    with node.db.session() as s:
        from pair.accounts.models import Facility

        fa = s.scalar(select(Facility).where(Facility.code == "HOSPA"))
        assert fa is not None
        site = accounts.create_user(s, fa, "node-hospa", "site-node")
        hub.tokens["node-hospa"] = accounts.create_token(s, site)[1]
        analyst = accounts.create_user(s, fa, "analyst", "registry-analyst", PASSWORD)
        hub.tokens["analyst"] = accounts.create_token(s, analyst)[1]
    node.close()


def test_site_submit_reaches_the_hub(sqlite_node: Node, shared_data: Path, tmp_path: Path) -> None:
    hub = LiveNode(tmp_path / "hub", f"sqlite:///{tmp_path / 'hub.db'}")
    hub.provision()
    _hub_accounts(hub)
    cli = subprocess.run(
        [sys.executable, "-m", "pair", "registry", "feedback-secret", "HOSPA"],
        env={**hub.env, "PAIR_DATA_DIR": str(hub.data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    secret = cli.stdout.strip()
    assert len(secret) == 44 and "shown once" in cli.stderr
    hub.start()
    try:
        site = sqlite_node
        _, actor = demo_setup(site, shared_data, tmp_path)
        run_id = create_demo_run(site, actor, 50)
        service.execute_run(site, run_id)
        key_file = site.settings.data_dir / "keys" / "feedback.key"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        # the site's hub credential is enough: the feedback goes to the hub's registry endpoint
        site.settings.hub_url = hub.base_url + "/"
        site.settings.hub_token = SecretStr(hub.tokens["node-hospa"])
        site.settings.feedback_retries, site.settings.feedback_backoff_s = 1, 0.0
        with site.db.session() as s:
            run = s.get(EvaluationRun, run_id)
            assert run is not None
            out = service.submit_feedback(site, s, run, "first delivery")
            assert out["status_code"] == 201 and out["attempts"] == 1
            # a retried delivery of the same envelope is acknowledged, not duplicated
            env = service.feedback_envelope(site, s, run)
        url, token = hub.base_url + "/api/registry/feedback", hub.tokens["node-hospa"]
        assert fb.submit_feedback(env, url, token, retries=0).status_code == 201
        again = fb.submit_feedback(env, url, token, retries=0)
        assert again.status_code == 200 and again.body["status"] == "duplicate"
        r = httpx.get(
            hub.base_url + "/api/registry/performance/algorithms/demo-cxr-opacity",
            headers=hub.headers("analyst"),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert [s["site"] for s in body["sites"]] == ["Hospital A"]
        assert body["sites"][0]["lower"] < body["sites"][0]["value"] < body["sites"][0]["upper"]
        assert (
            "auroc" in body["metrics"] and body["version"] == env["payload"]["algorithm"]["version"]
        )
        # the site's key is refused once the hub issues a new secret
        hub_db = open_node(settings=get_settings(hub.data_dir, database_url=hub.database_url))
        with hub_db.db.session() as s:
            receive.issue_secret(s, "HOSPA")
        hub_db.close()
        with site.db.session() as s:
            run = s.get(EvaluationRun, run_id)
            assert run is not None
            env2 = service.feedback_envelope(site, s, run)
        try:
            fb.submit_feedback(env2, url, token, retries=0)
            raise AssertionError("an old secret was accepted")
        except fb.FeedbackError as exc:
            assert "401" in exc.message
    finally:
        hub.stop()
