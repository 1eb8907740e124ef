"""A hub with three member facilities (site-node accounts, feedback secrets) and real feedback
payloads from the evaluation code, whose numbers a test then sets per site and period."""

from __future__ import annotations

import base64
import copy
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from pair.accounts import service as accounts
from pair.core.node import Node
from pair.evaluation import feedback as fb
from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.report.context import EvaluationContext
from pair.registry.performance import receive
from tests.evaluation.eval_reference import synthetic

PASSWORD = "Ward7-Lumen-Quartz"
SITES = ("HOSPA", "HOSPB", "HOSPC")


@dataclass
class Hub:
    tokens: dict[str, str] = field(default_factory=dict)  # user name -> bearer token
    secrets: dict[str, bytes] = field(default_factory=dict)  # facility code -> key
    facility_ids: dict[str, int] = field(default_factory=dict)

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


def build_hub(node: Node) -> Hub:
    """Facilities HOSPA-C, each with a site-node account ("node-HOSPA") and a secret; an
    evaluator and an admin of HOSPA; a registry analyst (of HOSPC's organisation)."""
    hub = Hub()
    with node.db.session() as s:
        for code in SITES:
            f = accounts.create_facility(s, f"Hospital {code[-1]}", code)
            hub.facility_ids[code] = f.id
            user = accounts.create_user(s, f, f"node-{code}", "site-node")
            hub.tokens[user.name] = accounts.create_token(s, user)[1]
            hub.secrets[code] = base64.b64decode(receive.issue_secret(s, code)[1])
            if code == "HOSPA":
                for name, role in (("eva", "evaluator"), ("ada", "admin"), ("rad", "radiologist")):
                    u = accounts.create_user(s, f, name, role, PASSWORD)
                    hub.tokens[name] = accounts.create_token(s, u)[1]
            if code == "HOSPC":
                u = accounts.create_user(s, f, "ana", "registry-analyst", PASSWORD)
                hub.tokens["ana"] = accounts.create_token(s, u)[1]
    return hub


@cache
def _template() -> str:
    y, p = synthetic(300, 11)
    r = evaluate_scores(y, p, 0.5, n_boot=100)
    ctx = EvaluationContext(
        algorithm_id="cxr-demo",
        algorithm_name="CXR demo",
        algorithm_version="1.0.0",
        model_sha256="1" * 64,
        truth_source="RT-PCR",
        date_range="20260105-20260320",
    )
    import json

    return json.dumps(fb.build_feedback_payload(r, ctx, site={"region": "EU"}))


def payload(
    auc: tuple[float, float, float] | None = None,
    end: str = "2026-03",
    *,
    version: str = "1.0.0",
    use_case_id: str | None = None,
    sensitivity: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A real binary payload with a new feedback id and the given AUC (value, lower, upper),
    evaluation month and true positives / positives at the operating point."""
    import json

    p: dict[str, Any] = copy.deepcopy(json.loads(_template()))
    p["feedback_id"] = str(uuid.uuid4())
    p["algorithm"]["version"] = version
    p["evaluation_period"] = {"start": end, "end": end}
    p["use_case_id"] = use_case_id
    if auc is not None:
        p["auc"] = {**p["auc"], "value": auc[0], "lower": auc[1], "upper": auc[2]}
    if sensitivity is not None:
        tp, pos = sensitivity
        op = p["operating_points"][0]
        c = op["confusion"]
        c["tp"], c["fn"] = tp, pos - tp
        op["sensitivity"] = {**op["sensitivity"], "value": tp / pos}
    return p


def sign(p: dict[str, Any], key: bytes) -> dict[str, Any]:
    return fb.sign_payload(p, key, "site")


def logit_ci(value: float, se: float) -> tuple[float, float, float]:
    """(value, lower, upper) with a 95% interval of ``se`` on the logit scale."""
    lv = float(np.log(value / (1 - value)))
    lo, hi = lv - 1.959964 * se, lv + 1.959964 * se
    return value, float(1 / (1 + np.exp(-lo))), float(1 / (1 + np.exp(-hi)))
