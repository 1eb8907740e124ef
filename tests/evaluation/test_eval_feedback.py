"""Feedback payload: aggregate-only content, JSON Schema, signing, and delivery with retries
against a real local HTTP server."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from pair.core.errors import Invalid
from pair.evaluation import feedback as fb
from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.report.context import EvaluationContext
from tests.evaluation.eval_reference import synthetic

KEY = bytes(range(32))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def payload() -> dict[str, Any]:
    y, p = synthetic(400, 71)
    rng = np.random.default_rng(72)
    site = np.where(rng.uniform(size=y.size) < 0.005, "rare", "common")
    r = evaluate_scores(
        y,
        p,
        0.5,
        n_boot=200,
        groups={"site": site},
        compare_scores=np.clip(p + rng.normal(scale=0.2, size=y.size), 0, 1),
    )
    ctx = EvaluationContext(
        algorithm_id="demo", algorithm_version="1.0", model_sha256="0" * 64, truth_source="RT-PCR"
    )
    return fb.build_feedback_payload(
        r,
        ctx,
        site={"region": "EU", "facility_type": "academic"},
        comment="works on our portable AP films",
    )


def test_payload_is_aggregate_only_and_matches_schema(payload: dict[str, Any]) -> None:
    env = fb.sign_payload(payload, KEY, "site-1")
    jsonschema.Draft202012Validator(
        fb.schema(), format_checker=jsonschema.FormatChecker()
    ).validate(env)
    text = json.dumps(payload)
    assert "roc_empirical" not in text and "scores" not in text
    assert all(s["n"] >= fb.DEFAULT_MIN_CELL for s in payload["subgroups"])
    assert payload["suppressed_subgroups"] >= 1  # the 'rare' site level is suppressed
    assert len(payload["roc"]) == 21


def test_docs_copy_of_schema_is_identical() -> None:
    packaged = REPO / "src/pair/evaluation/data/feedback.schema.json"
    assert (REPO / "docs/feedback.schema.json").read_text() == packaged.read_text()


@pytest.mark.parametrize(
    "bad",
    [
        {"patient_id": "123"},
        {"nested": [{"study_instance_uid": "x"}]},
        {"scores": [0.1, 0.2]},
        {"note": "1.2.840.113619.2.55.3"},
        {"values": list(range(500))},
    ],
)
def test_case_level_content_is_refused(payload: dict[str, Any], bad: dict[str, Any]) -> None:
    with pytest.raises(Invalid, match="aggregate-only"):
        fb.assert_aggregate_only({**payload, **bad})
    with pytest.raises(Invalid):
        fb.sign_payload({**payload, **bad}, KEY, "k")


def test_payload_violating_the_schema_is_refused(payload: dict[str, Any]) -> None:
    bad = {**payload, "algorithm": {**payload["algorithm"], "sha256": "NOT-A-HASH"}}
    with pytest.raises(Invalid, match="schema at payload/algorithm/sha256"):
        fb.sign_payload(bad, KEY, "k")


def test_signature_verifies_and_detects_tampering(payload: dict[str, Any]) -> None:
    env = fb.sign_payload(payload, KEY, "site-1")
    assert fb.verify_signature(env, KEY)
    assert not fb.verify_signature(env, bytes(32))
    tampered = json.loads(json.dumps(env))
    tampered["payload"]["auc"]["value"] = 0.99
    assert not fb.verify_signature(tampered, KEY)
    with pytest.raises(Invalid, match="at least 32 bytes"):
        fb.sign_payload(payload, b"short", "k")


def test_key_file_handling(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "feedback.key"
    key = fb.generate_key(path)
    assert fb.load_key(path) == key
    assert (path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(FileExistsError):
        fb.generate_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(Invalid, match="owner only"):
        fb.load_key(path)


class _Hub(BaseHTTPRequestHandler):
    responses: list[int] = []
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        type(self).received.append({"headers": dict(self.headers), "body": body})
        status = type(self).responses.pop(0) if type(self).responses else 201
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(json.dumps({"status": status}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def hub() -> Iterator[tuple[str, type[_Hub]]]:
    handler = type("Hub", (_Hub,), {"responses": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/feedback", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_submit_retries_after_503(payload: dict[str, Any], hub: tuple[str, type[_Hub]]) -> None:
    url, handler = hub
    handler.responses = [503, 201]
    env = fb.sign_payload(payload, KEY, "site-1")
    res = fb.submit_feedback(env, url, "tok", retries=3, backoff=0.01)
    assert res.status_code == 201 and res.attempts == 2
    assert len(handler.received) == 2
    first, second = handler.received
    assert second["headers"]["Authorization"] == "Bearer tok"
    assert first["headers"]["Idempotency-Key"] == second["headers"]["Idempotency-Key"]
    assert second["headers"]["Idempotency-Key"] == payload["feedback_id"]
    assert fb.verify_signature(second["body"], KEY)


@pytest.mark.integration
def test_submit_gives_up_and_does_not_retry_client_errors(
    payload: dict[str, Any], hub: tuple[str, type[_Hub]]
) -> None:
    url, handler = hub
    env = fb.sign_payload(payload, KEY, "site-1")
    handler.responses = [503, 503, 503]
    with pytest.raises(fb.FeedbackError, match="after 3 attempts"):
        fb.submit_feedback(env, url, "tok", retries=2, backoff=0.01)
    handler.responses = [403]
    handler.received.clear()
    with pytest.raises(fb.FeedbackError, match="HTTP 403"):
        fb.submit_feedback(env, url, "tok", retries=3, backoff=0.01)
    assert len(handler.received) == 1


@pytest.mark.integration
def test_submit_retries_connection_errors(payload: dict[str, Any]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = fb.sign_payload(payload, KEY, "site-1")
    with pytest.raises(fb.FeedbackError, match="ConnectError"):
        fb.submit_feedback(env, f"http://127.0.0.1:{port}/x", "tok", retries=1, backoff=0.01)
