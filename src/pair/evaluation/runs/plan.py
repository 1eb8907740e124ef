"""A run of an algorithm bound to a published use case follows the use case's evaluation plan.

``apply_plan`` (at ``create_run``) fills what the caller left out from the plan: the truth
source (``truth_spec``) and the operating point rule (``fixed``: that threshold;
``target_sensitivity`` / ``target_specificity``: the threshold reaching that value on the
evaluation data, reported as chosen on the same data, i.e. optimistic; ``youden``: the maximum
Youden J, always computed; ``manifest_threshold``: the package's own); explicit options win, and
the stored snapshot says which values came from the plan. The plan's operating point is the one
whose sensitivity, specificity or accuracy ``plan_check`` compares with the minimum.

``plan_check`` reads the plan's primary metric and its confidence interval from the finished
result and compares it with the minimum acceptable performance: a run is flagged when the point
estimate is below the minimum, and the check says separately whether the interval's lower bound
is below it too. No new statistics: only estimates the evaluation already computed are read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from pair.algorithms.manifest import Manifest
from pair.core.errors import Invalid
from pair.evaluation.runs.rows import GROUP_COLUMNS, RunOptions
from pair.usecases.service import in_force

FLAG = "below the use case's minimum acceptable performance"
THRESHOLD_METRICS = ("sensitivity", "specificity", "accuracy")
# plan subgroup name -> case-table column (the node's facility is the case table's site)
SUBGROUP_COLUMN = {"facility": "site"}
# plan operating-point rule -> the run option that adds its operating point
RULE_OPTION = {
    "fixed": "fixed_threshold",
    "target_sensitivity": "target_sensitivity",
    "target_specificity": "target_specificity",
}
# plan operating-point rule -> the operating point's name in the result
RULE_POINT = {
    "manifest_threshold": "manifest",
    "fixed": "fixed",
    "target_sensitivity": "target_sensitivity",
    "target_specificity": "target_specificity",
    "youden": "youden",
}


def plan_point(result: dict[str, Any], rule: dict[str, Any] | None) -> dict[str, Any] | None:
    """The operating point the plan's rule names (the manifest's when the rule names none)."""
    ops = {op["name"]: op for op in result.get("operating_points", [])}
    name = RULE_POINT.get((rule or {}).get("kind", ""), "manifest")
    return ops.get(name) or ops.get("manifest")


def apply_plan(
    session: Session, manifest: Manifest, truth: str | None, opts: RunOptions
) -> tuple[str, RunOptions]:
    """The truth spec and options of a run, defaulted from the declared use case's plan."""
    uc = in_force(session, manifest.use_case_id) if manifest.use_case_id else None
    if uc is None:
        if not truth:
            raise Invalid("Choose a truth source (the algorithm declares no published use case).")
        return truth, opts
    plan: dict[str, Any] = uc.document["evaluation_plan"]
    from_plan: list[str] = []
    explicit: list[str] = []
    if truth:
        explicit.append("truth")
    elif plan.get("truth_spec"):
        truth = str(plan["truth_spec"])
        from_plan.append("truth")
    else:
        raise Invalid(
            f"Choose a truth source: use case {uc.ref} names its truth ({plan['truth_source']}) "
            "but no truth_spec for local evaluation."
        )
    rule = plan["operating_point_rule"]
    option = RULE_OPTION.get(rule["kind"])
    if option is not None and rule.get("value") is not None:
        if opts.get(option) is None:
            opts[option] = float(rule["value"])  # type: ignore[literal-required]
            from_plan.append("operating_point")
        else:
            explicit.append("operating_point")
    elif rule["kind"] == "youden":
        from_plan.append("operating_point")
    minimum = plan["minimum_performance"]
    opts["use_case"] = {
        "ref": uc.ref,
        "truth_source": plan["truth_source"],
        "primary_metric": plan["primary_metric"],
        "minimum": {
            "metric": minimum["metric"],
            "value": float(minimum["value"]),
            "bound": minimum.get("bound", "ci_lower"),
        },
        "required_subgroups": list(plan["required_subgroups"]),
        "operating_point_rule": dict(rule),
        "from_plan": from_plan,
        "explicit": explicit,
    }
    return truth, opts


def _estimate(
    result: dict[str, Any], metric: str, rule: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The stored estimate (value, lower, upper) of ``metric``; None when not computed."""
    if result.get("kind") == "multiclass":
        ev = result.get("evaluation") or {}
        if metric == "accuracy":
            return ev.get("accuracy")
        if metric == "weighted_kappa":
            return result.get("kappa_linear") or result.get("kappa_quadratic")
        return None
    if metric == "auroc":
        return result.get("auc")
    point = plan_point(result, rule)
    if point is not None and metric in THRESHOLD_METRICS:
        return point.get(metric)
    return None


def plan_check(options: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The primary metric with its CI against the plan's minimum (None: no use case)."""
    plan = options.get("use_case")
    if not plan:
        return None
    columns = {g: SUBGROUP_COLUMN.get(g, g) for g in plan["required_subgroups"]}
    check: dict[str, Any] = {
        **plan,
        "subgroups_reported": [g for g, c in columns.items() if c in GROUP_COLUMNS],
        "subgroups_missing": [g for g, c in columns.items() if c not in GROUP_COLUMNS],
        "estimate": None,
        "below_minimum": None,
        "ci_lower_below_minimum": None,
        "message": "",
    }
    if result is None:
        return check
    metric, minimum = plan["minimum"]["metric"], plan["minimum"]["value"]
    rule = plan.get("operating_point_rule")
    est = _estimate(result, metric, rule)
    if est is None or est.get("value") is None:
        check["message"] = f"{metric} is not computed by local evaluation; no check made."
        return check
    value, lower, upper = est["value"], est.get("lower"), est.get("upper")
    check["estimate"] = {"metric": metric, "value": value, "lower": lower, "upper": upper}
    point = plan_point(result, rule) if metric in THRESHOLD_METRICS else None
    at = ""
    if point is not None and result.get("kind") != "multiclass":
        check["operating_point"] = {
            "name": point["name"],
            "source": point["source"],
            "threshold": point["threshold"],
            "chosen_on_same_data": point["chosen_on_same_data"],
        }
        at = f" at the {point['name']} operating point (threshold {point['threshold']:.4g}"
        at += "; chosen on the same cases, so optimistic)" if point["chosen_on_same_data"] else ")"
        metric = metric + at
    check["below_minimum"] = value < minimum
    check["ci_lower_below_minimum"] = None if lower is None else lower < minimum
    level = f"{100 * float(result.get('level', 0.95)):g}% CI"
    ci = f" ({level} {lower:.3f}-{upper:.3f})" if lower is not None and upper is not None else ""
    if value < minimum:
        check["message"] = f"{metric} {value:.3f}{ci} is {FLAG} ({minimum:g}, {plan['ref']})."
    elif check["ci_lower_below_minimum"]:
        check["message"] = (
            f"{metric} {value:.3f}{ci} meets the minimum {minimum:g} ({plan['ref']}) as a point "
            "estimate, but the lower bound of its interval is below it."
        )
    else:
        check["message"] = (
            f"{metric} {value:.3f}{ci} meets the minimum {minimum:g} ({plan['ref']})."
        )
    return check
