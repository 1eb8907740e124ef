"""Feedback hub settings come from the one Settings object (PAIR_FEEDBACK_*), retries included."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pair.core.config import get_settings
from pair.core.errors import Invalid
from pair.core.node import Node
from pair.evaluation import feedback as fb
from pair.evaluation.runs import service
from pair.evaluation.runs.models import EvaluationRun
from tests.conftest import free_port
from tests.evaluation.runs.evalrun_data import create_demo_run, demo_setup


def test_feedback_settings_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAIR_FEEDBACK_URL", "https://hub.example.org/api/feedback")
    monkeypatch.setenv("PAIR_FEEDBACK_TOKEN", "s3cret-token")
    monkeypatch.setenv("PAIR_FEEDBACK_KEY_ID", "site-key-7")
    monkeypatch.setenv("PAIR_FEEDBACK_RETRIES", "5")
    monkeypatch.setenv("PAIR_FEEDBACK_BACKOFF_S", "0.1")
    s = get_settings(tmp_path)
    assert s.feedback_url == "https://hub.example.org/api/feedback"
    assert s.feedback_token.get_secret_value() == "s3cret-token"
    assert "s3cret-token" not in repr(s) and "s3cret-token" not in s.model_dump_json()
    assert (s.feedback_key_id, s.feedback_retries, s.feedback_backoff_s) == ("site-key-7", 5, 0.1)
    monkeypatch.setenv("PAIR_FEEDBACK_RETRIES", "-1")
    with pytest.raises(ValueError, match="feedback_retries"):
        get_settings(tmp_path)


class _FlakyHub(BaseHTTPRequestHandler):
    fail_first = 0
    calls: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FlakyHub.calls.append({"auth": self.headers["Authorization"], "body": body})
        ok = len(_FlakyHub.calls) > _FlakyHub.fail_first
        self.send_response(202 if ok else 503)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        return


def test_submit_uses_the_settings(sqlite_node: Node, shared_data: Path, tmp_path: Path) -> None:
    node = sqlite_node
    _, actor = demo_setup(node, shared_data, tmp_path)
    run_id = create_demo_run(node, actor, 50)
    service.execute_run(node, run_id)
    port = free_port()
    hub = HTTPServer(("127.0.0.1", port), _FlakyHub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    settings = node.settings
    try:
        with node.db.session() as s:
            run = s.get(EvaluationRun, run_id)
            assert run is not None
            with pytest.raises(Invalid, match="PAIR_FEEDBACK_URL"):
                service.submit_feedback(node, s, run)
            settings.feedback_url = f"http://127.0.0.1:{port}/feedback"
            settings.feedback_token = SecretStr("hub-token")
            settings.feedback_key_id = "key-A"
            settings.feedback_retries, settings.feedback_backoff_s = 2, 0.0
            _FlakyHub.fail_first = 2
            out = service.submit_feedback(node, s, run, "twice refused")
            assert out["status_code"] == 202 and out["attempts"] == 3
            sent = _FlakyHub.calls[-1]
            assert sent["auth"] == "Bearer hub-token"
            assert sent["body"]["signature"]["key_id"] == "key-A"
            key = fb.load_key(node.settings.data_dir / "keys/feedback.key")
            assert fb.verify_signature(sent["body"], key)
            settings.feedback_retries = 0
            _FlakyHub.calls, _FlakyHub.fail_first = [], 1
            with pytest.raises(fb.FeedbackError, match="after 1 attempts"):
                service.submit_feedback(node, s, run)
            assert len(_FlakyHub.calls) == 1
    finally:
        hub.shutdown()
