"""Create, list, start and resume evaluation runs; build their report context and feedback.

``execute_run`` (``runs.execute``) is the one code path for the CLI (synchronous, with
a progress bar), the API and the portal (a background thread). It is resumable: inference
results are cached per algorithm version x instance by ``pair.algorithms.runner``, so running a
crashed or interrupted run again only computes what is missing. One executor at a time: see
``pair.evaluation.runs.jobs``.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility, Role
from pair.algorithms import service as algorithms
from pair.algorithms.manifest import Manifest
from pair.algorithms.runner import WorkerPool
from pair.audit.service import Actor, record
from pair.core.errors import Forbidden, Invalid, NotFound
from pair.core.node import Node
from pair.evaluation.report.context import EvaluationContext
from pair.evaluation.result import AnyResult, load_result
from pair.evaluation.runs import jobs
from pair.evaluation.runs.cohort import parse_cohort
from pair.evaluation.runs.execute import (
    execute_run,  # re-exported: the CLI and tests call service.execute_run
)
from pair.evaluation.runs.models import EvaluationRun, RunStatus
from pair.evaluation.runs.multiclass import (
    check_run_inputs,
)
from pair.evaluation.runs.plan import apply_plan, plan_check
from pair.evaluation.runs.rows import (
    RunOptions,
    with_defaults,
)
from pair.evaluation.runs.truth import check_spec, describe_spec

RUN_ROLES = frozenset({Role.ADMIN.value, Role.EVALUATOR.value})


def _require(actor: Actor) -> None:
    if actor.role not in RUN_ROLES:
        raise Forbidden("Only evaluators and admins can run evaluations.")


def create_run(
    session: Session,
    actor: Actor,
    *,
    algorithm: str,
    cohort: str,
    truth: str | None,
    compare: str | None = None,
    labels: dict[str, Any] | None = None,
    facility_id: int | None = None,
    options: RunOptions | None = None,
) -> EvaluationRun:
    """Validate the inputs (cohort syntax, truth source, algorithm versions) and queue a run."""
    _require(actor)
    facility = facility_id if facility_id is not None else actor.facility_id
    if facility is None:
        raise Invalid("Choose a facility for the evaluation (--facility).")
    if actor.facility_id is not None and facility != actor.facility_id:
        raise Forbidden("You can only evaluate on your own facility's cases.")
    parsed = parse_cohort(cohort)
    a = algorithms.get_algorithm(session, *algorithms.parse_ref(algorithm))
    b = algorithms.get_algorithm(session, *algorithms.parse_ref(compare)) if compare else None
    truth, opts = apply_plan(
        session, Manifest.model_validate(a.manifest), truth, with_defaults(options)
    )
    spec = check_spec(truth)
    if spec == "csv" and not labels:
        raise Invalid("Truth source csv needs a label file.")
    check_run_inputs(
        Manifest.model_validate(a.manifest),
        a.ref,
        spec,
        labels,
        compare=(Manifest.model_validate(b.manifest), b.ref) if b is not None else None,
        compare_report=opts.get("compare_report"),
    )
    if opts.get("compare_report"):
        if b is not None:
            raise Invalid("Compare with another algorithm or with the report category, not both.")
        check_spec(f"report:{opts['compare_report']}")
    run = EvaluationRun(
        facility_id=facility,
        created_by=actor.user_name,
        algorithm_id=a.algorithm_id,
        algorithm_version=a.version,
        compare_algorithm_id=b.algorithm_id if b else None,
        compare_version=b.version if b else None,
        cohort_query=parsed.to_query(),
        truth_source=spec,
        truth_labels=labels if spec == "csv" else None,
        options=opts,
        status=RunStatus.QUEUED,
        failures=[],
        cohort_summary={},
        cases=[],
    )
    session.add(run)
    session.flush()
    record(
        session,
        actor,
        "evaluation.create",
        "evaluation_run",
        str(run.id),
        detail={
            "algorithm": a.ref,
            "compare": b.ref if b else None,
            "truth": spec,
            "use_case": opts.get("use_case", {}).get("ref"),
        },
    )
    return run


def get_run(session: Session, actor: Actor, run_id: int) -> EvaluationRun:
    run = session.get(EvaluationRun, run_id)
    if run is None or (actor.facility_id is not None and run.facility_id != actor.facility_id):
        raise NotFound(f"No evaluation run {run_id} in your facility.")
    return run


def list_runs(session: Session, actor: Actor) -> list[EvaluationRun]:
    stmt = select(EvaluationRun).order_by(EvaluationRun.id.desc())
    if actor.facility_id is not None:
        stmt = stmt.where(EvaluationRun.facility_id == actor.facility_id)
    return list(session.scalars(stmt))


def start_background(node: Node, run_id: int, pool: WorkerPool | None = None) -> threading.Thread:
    """Claim the run now (``Conflict`` if it is done or being executed), then run it in a daemon
    thread (API/portal); errors end up in the row's status and error."""
    token = jobs.claim(node, run_id)

    def target() -> None:
        try:
            execute_run(node, run_id, pool=pool, token=token)
        except Exception:
            return

    t = threading.Thread(target=target, name=f"evaluation-{run_id}", daemon=True)
    t.start()
    return t


def resume_interrupted(
    node: Node, pool: WorkerPool | None = None, stop: threading.Event | None = None
) -> list[threading.Thread]:
    """``pair serve`` start-up: execute again, in the background, every run left queued or
    running by a server that stopped; cached inference makes them continue where they were."""
    return jobs.resume_interrupted(
        node, lambda run_id, token: execute_run(node, run_id, pool=pool, token=token), stop
    )


def result_of(run: EvaluationRun) -> AnyResult:
    if run.status != RunStatus.DONE or run.result is None:
        raise NotFound(f"Evaluation run {run.id} has no result yet (status {run.status}).")
    return load_result(run.result)


def report_context(session: Session, run: EvaluationRun) -> EvaluationContext:
    a = algorithms.get_algorithm(session, run.algorithm_id, run.algorithm_version)
    m = Manifest.model_validate(a.manifest)
    facility = session.get(Facility, run.facility_id)
    summary = run.cohort_summary or {}
    excl = summary.get("exclusions") or {}
    dates = [r.get("study_date", "") for r in run.cases if r.get("study_date")]
    return EvaluationContext(
        title=f"Local evaluation of {m.name}",
        site=facility.name if facility else None,
        algorithm_id=a.algorithm_id,
        algorithm_name=m.name,
        algorithm_version=a.version,
        model_sha256=a.sha256,
        intended_use=m.intended_use,
        data_source=f"PAIR node, facility {facility.name if facility else run.facility_id}; "
        f"cohort query '{run.cohort_query or '(all cases)'}'; one case = one series",
        truth_source=describe_spec(run.truth_source),
        population=f"{summary.get('included', 0)} series of {summary.get('patients', 0)} patients "
        f"selected from {summary.get('selected', 0)} series",
        exclusions="; ".join(f"{k}: {v}" for k, v in excl.items()) or "none",
        preprocessing=m.input.describe(),
        deidentification="Images de-identified on ingest by the PAIR node (pair.deid profile)",
        date_range=f"{min(dates)}-{max(dates)}" if dates else None,
        plan_check=plan_check(run.options or {}, run.result),
    )


def feedback_envelope(
    node: Node, session: Session, run: EvaluationRun, comment: str | None = None
) -> dict[str, Any]:
    """Signed aggregate-only feedback with the node's key (created on first use, mode 0600)."""
    from pair.evaluation import feedback as fb

    key_path = node.settings.data_dir / "keys" / "feedback.key"
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True)
        fb.generate_key(key_path)
    payload = fb.build_feedback_payload(
        result_of(run), report_context(session, run), comment=comment
    )
    key_id = node.settings.feedback_key_id or node.settings.site_id
    return fb.sign_payload(payload, fb.load_key(key_path), key_id)


def submit_feedback(
    node: Node, session: Session, run: EvaluationRun, comment: str | None = None
) -> dict[str, Any]:
    """POST the signed feedback to the hub in the settings (``PAIR_FEEDBACK_URL``, bearer
    ``PAIR_FEEDBACK_TOKEN``; by default the consortium hub's ``/api/registry/feedback`` with the
    site's hub credential, ``PAIR_HUB_URL`` / ``PAIR_HUB_TOKEN``), with
    ``PAIR_FEEDBACK_RETRIES`` retries and exponential backoff."""
    from pair.evaluation import feedback as fb

    settings = node.settings
    hub = settings.hub_url.rstrip("/")
    url = settings.feedback_url or (f"{hub}/api/registry/feedback" if hub else "")
    token = settings.feedback_token.get_secret_value() or settings.hub_token.get_secret_value()
    if not url or not token:
        raise Invalid(
            "No feedback hub configured: set PAIR_HUB_URL and PAIR_HUB_TOKEN (or "
            "PAIR_FEEDBACK_URL and PAIR_FEEDBACK_TOKEN)."
        )
    envelope = feedback_envelope(node, session, run, comment)
    res = fb.submit_feedback(
        envelope,
        url,
        token,
        retries=settings.feedback_retries,
        backoff=settings.feedback_backoff_s,
    )
    return {
        "status_code": res.status_code,
        "attempts": res.attempts,
        "feedback_id": envelope["payload"]["feedback_id"],
    }
