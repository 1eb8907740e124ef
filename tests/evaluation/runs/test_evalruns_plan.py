"""A run of an algorithm bound to a published use case follows the use case's evaluation plan.

The demo algorithm declares ``pair-demo-cxr-opacity``; these tests publish a use case under
that id (the shipped chest radiograph use case, renamed) so the plan applies to its runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pair.audit.service import Actor
from pair.core.errors import Invalid
from pair.core.node import Node
from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.runs import service
from pair.evaluation.runs.plan import FLAG, plan_check
from pair.usecases import service as usecases
from pair.usecases.spec import load_file
from tests.evaluation.runs.evalrun_data import demo_setup
from tests.web.test_pages import HTML, sign_in

N_BOOT = 200
PASSWORD = "Ward7-Lumen-Quartz-Plan"
SHIPPED = Path(usecases.__file__).parent / "data" / "shipped" / "covid19-cxr-pattern.yaml"


def publish_demo_use_case(
    node: Node,
    minimum: float,
    truth_spec: str | None = "rt-pcr",
    rule: dict[str, Any] | None = None,
    metric: str = "auroc",
) -> None:
    doc: dict[str, Any] = dict(load_file(SHIPPED).document)
    doc["overview"] = {**doc["overview"], "id": "pair-demo-cxr-opacity"}
    plan = dict(doc["evaluation_plan"])
    plan["minimum_performance"] = {"metric": metric, "value": minimum, "bound": "ci_lower"}
    if rule is not None:
        plan["operating_point_rule"] = rule
    plan.pop("truth_spec", None)  # the shipped CXR use case has one; each test decides
    if truth_spec:
        plan["truth_spec"] = truth_spec
    doc["evaluation_plan"] = plan
    panel = Actor(None, "chair", None, "panel", "test")
    with node.db.session() as s:
        usecases.create_draft(s, panel, doc)
        usecases.submit(s, panel, "pair-demo-cxr-opacity")
        usecases.publish(s, panel, "pair-demo-cxr-opacity")


def _wait(client: TestClient, run_id: int, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(600):
        body: dict[str, Any] = client.get(f"/api/evaluations/{run_id}", headers=headers).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError("evaluation did not finish")


def test_run_takes_the_plan_and_flags_below_minimum(
    node: Node, shared_data: Path, tmp_path: Path
) -> None:
    from pair.web.app import create_app

    data, _ = demo_setup(node, shared_data, tmp_path, PASSWORD)
    publish_demo_use_case(node, minimum=1.0)
    client = TestClient(create_app(node))
    ev = {"Authorization": f"Bearer {data.evaluator_token}"}
    # no truth given: the plan's truth_spec and its target-sensitivity operating point apply
    r = client.post(
        "/api/evaluations", data={"algorithm": "demo-cxr-opacity", "n_boot": N_BOOT}, headers=ev
    )
    assert r.status_code == 202, r.text
    assert r.json()["truth"] == "rt-pcr"
    body = _wait(client, r.json()["id"], ev)
    assert body["status"] == "done", body["error"]
    check = body["use_case_check"]
    assert check["ref"] == "pair-demo-cxr-opacity@1"
    assert check["from_plan"] == ["truth", "operating_point"] and check["explicit"] == []
    names = [op["name"] for op in body["result"]["operating_points"]]
    assert "target_sensitivity" in names  # the plan's rule: sensitivity 0.9
    auc = body["result"]["auc"]
    assert auc["value"] < 1.0
    assert check["estimate"] == {
        "metric": "auroc",
        "value": auc["value"],
        "lower": auc["lower"],
        "upper": auc["upper"],
    }
    assert check["below_minimum"] is True and check["ci_lower_below_minimum"] is True
    assert FLAG in check["message"]
    assert check["subgroups_missing"] == ["view_position"]
    html = client.get(f"/api/evaluations/{body['id']}/report.html", headers=ev)
    assert html.status_code == 200
    assert 'id="use-case-plan"' in html.text
    assert "Below the use case's minimum acceptable performance" in html.text
    # the portal's run page shows the same check
    portal = TestClient(create_app(node))
    sign_in(portal, "eva", PASSWORD)
    page = portal.get(f"/evaluations/{body['id']}", headers=HTML)
    assert page.status_code == 200
    assert 'id="use-case-plan"' in page.text
    assert FLAG.replace("'", "&#39;") in page.text


def test_explicit_options_override_the_plan(
    sqlite_node: Node, shared_data: Path, tmp_path: Path
) -> None:
    node = sqlite_node
    _, actor = demo_setup(node, shared_data, tmp_path)
    with node.db.session() as s, pytest.raises(Invalid, match="Choose a truth source"):
        service.create_run(s, actor, algorithm="demo-cxr-opacity", cohort="", truth=None)
    publish_demo_use_case(node, minimum=0.8)
    with node.db.session() as s:
        run = service.create_run(
            s,
            actor,
            algorithm="demo-cxr-opacity",
            cohort="",
            truth="report:rsna-cxr-covid:typical",
            options={"target_sensitivity": 0.7},
        )
        assert run.truth_source == "report:rsna-cxr-covid:typical"
        assert run.options["target_sensitivity"] == 0.7
        assert run.options["use_case"]["explicit"] == ["truth", "operating_point"]
        assert run.options["use_case"]["from_plan"] == []
        opts = dict(run.options)
    # a point estimate above the minimum whose interval reaches below it is not flagged,
    # but the check says so
    check = plan_check(opts, {"level": 0.95, "auc": {"value": 0.85, "lower": 0.78, "upper": 0.9}})
    assert check is not None
    assert check["below_minimum"] is False and check["ci_lower_below_minimum"] is True
    assert "lower bound of its interval is below it" in check["message"]


def test_plan_without_truth_spec_needs_a_truth(
    sqlite_node: Node, shared_data: Path, tmp_path: Path
) -> None:
    node = sqlite_node
    _, actor = demo_setup(node, shared_data, tmp_path)
    publish_demo_use_case(node, minimum=0.8, truth_spec=None)
    with node.db.session() as s, pytest.raises(Invalid, match="no truth_spec for local evaluation"):
        service.create_run(s, actor, algorithm="demo-cxr-opacity", cohort="", truth=None)


# Hand-made cohort for the operating-point rules: 5 negatives, 5 positives.
Y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
S = np.array([0.05, 0.1, 0.2, 0.35, 0.6, 0.3, 0.5, 0.7, 0.8, 0.9])


@pytest.mark.parametrize(
    ("rule", "option", "point", "threshold", "same_data"),
    [
        # specificity >= 0.8 allows one false positive of five: the lowest such threshold is
        # 0.5 (called positive: 0.6 | 0.5 0.7 0.8 0.9): sensitivity 4/5, specificity 4/5
        ({"kind": "target_specificity", "value": 0.8}, "target_specificity", 0.8, 0.5, True),
        ({"kind": "fixed", "value": 0.65}, "fixed_threshold", 0.65, 0.65, False),
        # Youden J: t=0.5 gives 0.8 + 0.8 - 1 = 0.6, the first maximum from the top
        ({"kind": "youden"}, None, None, 0.5, True),
    ],
)
def test_plan_operating_point_rule_is_applied(
    sqlite_node: Node,
    shared_data: Path,
    tmp_path: Path,
    rule: dict[str, Any],
    option: str | None,
    point: float | None,
    threshold: float,
    same_data: bool,
) -> None:
    node = sqlite_node
    _, actor = demo_setup(node, shared_data, tmp_path)
    publish_demo_use_case(node, minimum=0.7, rule=rule, metric="specificity")
    with node.db.session() as s:
        run = service.create_run(s, actor, algorithm="demo-cxr-opacity", cohort="", truth=None)
        opts = dict(run.options)
    assert opts["use_case"]["from_plan"] == ["truth", "operating_point"]
    if option is not None:
        assert opts[option] == point
    result = evaluate_scores(
        Y,
        S,
        0.5,
        target_specificity=opts.get("target_specificity"),
        fixed_threshold=opts.get("fixed_threshold"),
        n_boot=50,
    ).model_dump(mode="json")
    check = plan_check(opts, result)
    assert check is not None
    used = check["operating_point"]
    assert used["threshold"] == pytest.approx(threshold)
    assert used["chosen_on_same_data"] is same_data
    name = {"fixed": "fixed", "youden": "youden"}.get(rule["kind"], rule["kind"])
    assert used["name"] == name
    ops = {op["name"]: op for op in result["operating_points"]}
    assert check["estimate"]["value"] == ops[name]["specificity"]["value"]
    if same_data:
        assert "chosen on the same cases, so optimistic" in check["message"]
