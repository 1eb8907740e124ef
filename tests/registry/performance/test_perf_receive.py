"""The hub's feedback endpoint on both databases: each refusal with its own 4xx, idempotency on
the feedback id, what is stored, who reads which rows, and alerts from the use case's plan."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from pair.accounts import service as accounts
from pair.core.node import Node
from pair.evaluation import feedback as fb
from pair.registry.performance.meta import dersimonian_laird
from pair.registry.performance.metrics import logit
from pair.registry.performance.models import PerfAlert, PerfFeedback
from pair.usecases.spec import SHIPPED_DIR
from pair.web.app import create_app
from tests.registry.performance.perf_data import Hub, build_hub, logit_ci, payload, sign

URL = "/api/registry/feedback"
USE_CASE = "pair-covid19-cxr-pattern"


@pytest.fixture
def hub(node: Node) -> Iterator[tuple[TestClient, Hub]]:
    world = build_hub(node)
    with TestClient(create_app(node)) as client:
        yield client, world


def _raw_envelope(p: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Signed like the site signs, without the site's own schema and aggregate checks."""
    mac = hmac.new(key, fb.canonical_json(p), hashlib.sha256).digest()
    value = base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")
    return {"payload": p, "signature": {"alg": "HMAC-SHA256", "key_id": "x", "value": value}}


def _post(client: TestClient, w: Hub, user: str, env: Any, **headers: str) -> Any:
    body = env if isinstance(env, bytes) else json.dumps(env).encode()
    return client.post(
        URL, content=body, headers={**w.auth(user), "Content-Type": "application/json", **headers}
    )


def test_refusals_idempotency_and_what_is_stored(hub: tuple[TestClient, Hub], node: Node) -> None:
    client, w = hub
    key = w.secrets["HOSPA"]
    p = payload((0.86, 0.81, 0.90), "2026-02")
    env = sign(p, key)
    body = json.dumps(env).encode()
    ctype = {"Content-Type": "application/json"}
    assert client.post(URL, content=body, headers=ctype).status_code == 401
    assert _post(client, w, "eva", env).status_code == 403  # not a site-node account
    r = client.post(
        URL, content=body, headers={**w.auth("node-HOSPA"), "Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    assert _post(client, w, "node-HOSPA", b"{not json").status_code == 400
    assert _post(client, w, "node-HOSPA", b'{"payload": {"a": NaN}}').status_code == 400
    assert _post(client, w, "node-HOSPA", {"payload": p}).status_code == 422
    # signed with another facility's secret, or changed after signing
    r = _post(client, w, "node-HOSPA", sign(p, w.secrets["HOSPB"]))
    assert r.status_code == 401 and "signature" in r.json()["message"]
    tampered = copy.deepcopy(env)
    tampered["payload"]["auc"]["value"] = 0.99
    assert _post(client, w, "node-HOSPA", tampered).status_code == 401
    # a facility without a secret at the hub
    with node.db.session() as s:
        f = accounts.create_facility(s, "Hospital D", "HOSPD")
        u = accounts.create_user(s, f, "node-HOSPD", "site-node")
        w.tokens["node-HOSPD"] = accounts.create_token(s, u)[1]
    r = _post(client, w, "node-HOSPD", env)
    assert r.status_code == 403 and "feedback-secret" in r.json()["message"]
    # signed but not the schema; signed but case-level
    bad = {**copy.deepcopy(p), "per_case_scores": [0.1, 0.2]}
    r = _post(client, w, "node-HOSPA", _raw_envelope(bad, key))
    assert r.status_code == 422 and "schema" in r.json()["message"]
    for site in ({"patient_name": "DOE^JANE"}, {"region": "1.2.840.113619.2.55.3"}):
        leaky = {**copy.deepcopy(p), "site": site}
        r = _post(client, w, "node-HOSPA", _raw_envelope(leaky, key))
        assert r.status_code == 422 and "aggregate-only" in r.json()["message"]
    long_version = copy.deepcopy(p)
    long_version["algorithm"]["version"] = "9" * 101
    r = _post(client, w, "node-HOSPA", sign(long_version, key))
    assert r.status_code == 422 and "versions of at most 100" in r.json()["message"]
    r = _post(client, w, "node-HOSPA", env, **{"Idempotency-Key": "another-id"})
    assert r.status_code == 400
    big = b'{"payload": {}, "signature": {}, "pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert _post(client, w, "node-HOSPA", big).status_code == 413
    with node.db.session() as s:
        assert s.scalar(select(func.count(PerfFeedback.id))) == 0  # nothing half-stored
    # accepted once; a retry is acknowledged without a second row; other content: 409
    r = _post(client, w, "node-HOSPA", env, **{"Idempotency-Key": p["feedback_id"]})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "stored" and r.json()["period"] == "2026-Q1"
    r = _post(client, w, "node-HOSPA", env)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    changed = copy.deepcopy(p)
    changed["auc"]["value"] = 0.5
    assert _post(client, w, "node-HOSPA", sign(changed, key)).status_code == 409
    # the same id from another facility is not the same feedback either
    assert _post(client, w, "node-HOSPB", sign(p, w.secrets["HOSPB"])).status_code == 409
    with node.db.session() as s:
        rows = list(s.scalars(select(PerfFeedback)))
        assert len(rows) == 1
        row = rows[0]
        assert (row.algorithm_id, row.algorithm_version) == ("cxr-demo", "1.0.0")
        assert row.facility_id == w.facility_ids["HOSPA"] and row.period == "2026-Q1"
        got = {m.metric: m for m in row.metrics}
        assert (got["auroc"].value, got["auroc"].lower, got["auroc"].upper) == (0.86, 0.81, 0.9)
        c = p["operating_points"][0]["confusion"]
        assert (got["sensitivity"].events, got["sensitivity"].n) == (c["tp"], c["tp"] + c["fn"])
        assert (got["specificity"].events, got["specificity"].n) == (c["tn"], c["tn"] + c["fp"])


def test_a_new_secret_replaces_the_old(hub: tuple[TestClient, Hub], node: Node) -> None:
    client, w = hub
    from pair.registry.performance.receive import issue_secret

    with node.db.session() as s:
        new = base64.b64decode(issue_secret(s, "HOSPA")[1])
    assert _post(client, w, "node-HOSPA", sign(payload(), w.secrets["HOSPA"])).status_code == 401
    assert _post(client, w, "node-HOSPA", sign(payload(), new)).status_code == 201


def _summary(client: TestClient, w: Hub, user: str, **params: str) -> Any:
    r = client.get(
        "/api/registry/performance/algorithms/cxr-demo", params=params, headers=w.auth(user)
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_pooled_estimate_and_who_sees_which_site(hub: tuple[TestClient, Hub]) -> None:
    client, w = hub
    aucs = {"HOSPA": (0.88, 0.20), "HOSPB": (0.80, 0.25), "HOSPC": (0.93, 0.30)}
    for code, (value, se) in aucs.items():
        env = sign(payload(logit_ci(value, se), "2026-05"), w.secrets[code])
        assert _post(client, w, f"node-{code}", env).status_code == 201
    s = _summary(client, w, "ana", metric="auroc")
    assert s["all_sites"] and [r["site"] for r in s["sites"]] == [
        "Hospital A",
        "Hospital B",
        "Hospital C",
    ]
    ref = dersimonian_laird(
        [logit(v) for v, _ in aucs.values()], [se**2 for _, se in aucs.values()]
    )
    pooled = s["pooled"]
    assert pooled["k"] == 3 and pooled["scale"] == "logit"
    assert pooled["value"] == pytest.approx(1 / (1 + math.exp(-ref.estimate)), rel=1e-4)
    assert pooled["lower"] == pytest.approx(1 / (1 + math.exp(-ref.lower)), rel=1e-4)
    assert pooled["i2"] == pytest.approx(ref.i2, abs=0.05) and pooled["tau2"] >= 0
    # a facility's evaluator: its own row and the pooled estimate, no other site's name
    mine = _summary(client, w, "eva", metric="auroc")
    assert [r["site"] for r in mine["sites"]] == ["Hospital A"] and mine["other_sites"] == 2
    assert mine["pooled"]["value"] == pytest.approx(pooled["value"])
    assert "Hospital B" not in json.dumps(mine) and "HOSPC" not in json.dumps(mine)
    assert _summary(client, w, "ada")["sites"][0]["own"] is True
    r = client.get("/api/registry/performance/algorithms/cxr-demo", headers=w.auth("rad"))
    assert r.status_code == 403
    r = client.get("/api/registry/performance/algorithms/nothing", headers=w.auth("ana"))
    assert r.status_code == 404
    listed = client.get("/api/registry/performance/algorithms", headers=w.auth("eva")).json()
    assert [(a["algorithm_id"], a["sites"]) for a in listed["items"]] == [("cxr-demo", 3)]


def test_members_see_no_pooled_estimate_of_two_sites(hub: tuple[TestClient, Hub]) -> None:
    client, w = hub
    for code in ("HOSPA", "HOSPB"):
        env = sign(payload(logit_ci(0.85, 0.2), "2026-05"), w.secrets[code])
        assert _post(client, w, f"node-{code}", env).status_code == 201
    assert _summary(client, w, "ana")["pooled"]["k"] == 2
    mine = _summary(client, w, "eva")
    assert mine["pooled"] is None and "3 sites" in mine["pooled_note"]


def test_alerts_use_the_use_cases_minimum(hub: tuple[TestClient, Hub], node: Node) -> None:
    client, w = hub
    plan = yaml.safe_load((SHIPPED_DIR / "covid19-cxr-pattern.yaml").read_text())
    minimum = plan["evaluation_plan"]["minimum_performance"]
    assert (minimum["metric"], minimum["bound"]) == ("auroc", "ci_lower")
    m = float(minimum["value"])
    # HOSPA drifts below the minimum; HOSPB stays well above; HOSPC drifts too but names no
    # use case (the version's use case is named by HOSPA's feedback: it applies to every site);
    # version 2.0.0 drifts the same way but nobody names a use case for it: no threshold
    drifting = [m + 0.06, m + 0.04, m + 0.01, m - 0.03, m - 0.05, m - 0.07]
    months = ["2025-02", "2025-05", "2025-08", "2025-11", "2026-02", "2026-05"]
    sends = [
        ("HOSPA", drifting, USE_CASE, "1.0.0"),
        ("HOSPB", [m + 0.08] * 6, USE_CASE, "1.0.0"),
        ("HOSPC", drifting, None, "1.0.0"),
        ("HOSPA", drifting, None, "2.0.0"),
    ]
    for code, values, uc, version in sends:
        for month, value in zip(months, values, strict=True):
            p = payload(logit_ci(value, 0.12), month, use_case_id=uc, version=version)
            assert _post(client, w, f"node-{code}", sign(p, w.secrets[code])).status_code == 201
    with node.db.session() as s:
        alerts = list(s.scalars(select(PerfAlert)))
    assert {a.algorithm_version for a in alerts} == {"1.0.0"}
    assert {a.facility_id for a in alerts} == {w.facility_ids["HOSPA"], w.facility_ids["HOSPC"]}
    assert all(a.threshold == m and a.use_case.startswith(USE_CASE + "@") for a in alerts)
    by_site = {(a.kind, a.period) for a in alerts if a.facility_id == w.facility_ids["HOSPA"]}
    # the lower bound crosses the minimum before the estimate does (bound: ci_lower)
    below = sorted(p for k, p in by_site if k == "below_minimum")
    assert below[0] in ("2025-Q2", "2025-Q3") and "2026-Q2" in below
    # the CUSUM: 0 until the estimate falls below 0.80, then 0.98, 2.88, 5.65 > h = 4
    assert sorted(p for k, p in by_site if k == "cusum") == ["2026-Q2"]
    s = _summary(client, w, "ana", version="1.0.0")
    assert s["threshold"]["value"] == m and s["metric"] == "auroc"
    a_series = next(r for r in s["sites"] if r["site"] == "Hospital A")["series"]
    assert [p["period"] for p in a_series][:2] == ["2025-Q1", "2025-Q2"]
    assert a_series[-1]["cusum_alarm"] is True
    # alerts are listed; a facility's evaluator sees its own only
    everyone = client.get("/api/registry/performance/alerts", headers=w.auth("ana")).json()
    assert len(everyone["items"]) == len(alerts)
    with node.db.session() as s:
        f = accounts.create_facility(s, "Hospital E", "HOSPE")
        u = accounts.create_user(s, f, "eve", "evaluator", "Ward7-Lumen-Quartz")
        w.tokens["eve"] = accounts.create_token(s, u)[1]
    other = client.get("/api/registry/performance/alerts", headers=w.auth("eve")).json()
    assert other["items"] == []
    # resending a stored feedback adds no alert
    n = len(alerts)
    env = sign(
        payload(logit_ci(m - 0.05, 0.12), "2026-05", use_case_id=USE_CASE), w.secrets["HOSPA"]
    )
    _post(client, w, "node-HOSPA", env)
    _post(client, w, "node-HOSPA", env)
    with node.db.session() as s:
        assert s.scalar(select(func.count(PerfAlert.id))) == n
