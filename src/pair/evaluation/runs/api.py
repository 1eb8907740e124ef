"""``/api/evaluations``: create a run (background thread), follow it, fetch result/report/feedback.

Evaluator and admin roles only; every run belongs to the caller's facility.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.algorithms.sandbox import WorkerPool
from pair.audit.service import Actor, record
from pair.core.errors import Conflict, Invalid
from pair.core.node import Node
from pair.evaluation.runs import export, service
from pair.evaluation.runs.models import EvaluationRun, RunStatus
from pair.evaluation.runs.multiclass import label_classes
from pair.evaluation.runs.plan import plan_check
from pair.evaluation.runs.rows import RunOptions
from pair.evaluation.runs.truth import map_label_csv
from pair.web.deps import SessionDep, get_node, require_roles
from pair.web.headers import REPORT_CSP

router = APIRouter(prefix="/api/evaluations", tags=["evaluations"])
can_evaluate = require_roles(Role.EVALUATOR)
MAX_LABEL_BYTES = 20 * 1024 * 1024


class RunOut(BaseModel):
    id: int
    status: str
    algorithm: str
    compare: str | None
    cohort: str
    truth: str
    done: int
    total: int
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    error: str
    cohort_summary: dict[str, Any]
    failures: list[dict[str, Any]]


class RunDetail(RunOut):
    result: dict[str, Any] | None
    # the declared use case's plan against the result: primary metric, CI, minimum, flag
    use_case_check: dict[str, Any] | None = None


def run_out(run: EvaluationRun) -> RunOut:
    return RunOut(
        id=run.id,
        status=run.status,
        algorithm=f"{run.algorithm_id}@{run.algorithm_version}",
        compare=f"{run.compare_algorithm_id}@{run.compare_version}"
        if run.compare_algorithm_id
        else None,
        cohort=run.cohort_query,
        truth=run.truth_source,
        done=run.done,
        total=run.total,
        created_by=run.created_by,
        created_at=run.created_at,
        finished_at=run.finished_at,
        error=run.error,
        cohort_summary=run.cohort_summary or {},
        failures=run.failures or [],
    )


def worker_pool(request: Request) -> WorkerPool | None:
    """The server's warm inference workers (``pair serve``); None: each run starts its own."""
    pool: WorkerPool | None = getattr(request.app.state, "worker_pool", None)
    return pool


def create_and_start(
    node: Node,
    actor: Actor,
    *,
    algorithm: str,
    cohort: str,
    truth: str | None,
    compare: str | None,
    labels: bytes | None,
    options: RunOptions,
    pool: WorkerPool | None = None,
) -> int:
    """Commit the queued run in its own transaction, then start its thread (API and portal)."""
    with node.db.session() as s:
        mapped = None
        if truth == "csv" and labels:
            if actor.facility_id is None:
                raise Invalid("A label file needs a facility: sign in as a facility user.")
            mapped = map_label_csv(s, actor.facility_id, labels, label_classes(s, algorithm))
        run = service.create_run(
            s,
            actor,
            algorithm=algorithm,
            cohort=cohort,
            truth=truth,
            compare=compare or None,
            labels=mapped,
            options=options,
        )
        run_id = run.id
    service.start_background(node, run_id, pool)
    return run_id


@router.post("", response_model=RunOut, status_code=202)
def create(
    algorithm: str = Form(..., description="ID or ID@VERSION"),
    truth: str | None = Form(
        None,
        description="rt-pcr | report:MODULE:VALUE[,VALUE] | report:MODULE (classes) | csv; "
        "left out: the truth_spec of the algorithm's use case plan",
    ),
    cohort: str = Form("", description="cohort query, e.g. modality=CR,DX;covid19_positive=Yes,No"),
    compare: str | None = Form(None),
    compare_report: str | None = Form(
        None, description="MODULE:VALUE[,VALUE] reader category (multiclass: MODULE)"
    ),
    n_boot: int = Form(2000),
    seed: int = Form(0),
    labels: UploadFile | None = None,
    node: Node = Depends(get_node),
    pool: WorkerPool | None = Depends(worker_pool),
    session: Session = SessionDep,
    actor: Actor = Depends(can_evaluate),
) -> RunOut:
    """Queue a run and start it in the background; poll ``GET /api/evaluations/{id}``."""
    data = labels.file.read(MAX_LABEL_BYTES + 1) if labels is not None else None
    if data is not None and len(data) > MAX_LABEL_BYTES:
        from pair.core.errors import PayloadTooLarge

        raise PayloadTooLarge(f"The label file is larger than {MAX_LABEL_BYTES} bytes.")
    run_id = create_and_start(
        node,
        actor,
        algorithm=algorithm,
        cohort=cohort,
        truth=truth,
        compare=compare,
        labels=data,
        options={"n_boot": n_boot, "seed": seed, "compare_report": compare_report or None},
        pool=pool,
    )
    return run_out(service.get_run(session, actor, run_id))


@router.get("", response_model=list[RunOut])
def list_all(session: Session = SessionDep, actor: Actor = Depends(can_evaluate)) -> list[RunOut]:
    return [run_out(r) for r in service.list_runs(session, actor)]


@router.get("/{run_id}", response_model=RunDetail)
def one(
    run_id: int, session: Session = SessionDep, actor: Actor = Depends(can_evaluate)
) -> RunDetail:
    run = service.get_run(session, actor, run_id)
    return RunDetail(
        **run_out(run).model_dump(),
        result=run.result,
        use_case_check=plan_check(run.options or {}, run.result),
    )


@router.post("/{run_id}/resume", response_model=RunOut, status_code=202)
def resume(
    run_id: int,
    node: Node = Depends(get_node),
    pool: WorkerPool | None = Depends(worker_pool),
    session: Session = SessionDep,
    actor: Actor = Depends(can_evaluate),
) -> RunOut:
    """Continue a failed or interrupted run (cached inference results are reused); 409 when it
    is done or another executor is running it."""
    run = service.get_run(session, actor, run_id)
    if run.status == RunStatus.DONE:
        raise Conflict(f"Evaluation run {run_id} is already done.")
    service.start_background(node, run_id, pool)
    return run_out(run).model_copy(update={"status": RunStatus.RUNNING})


@router.get("/{run_id}/report.html", response_class=HTMLResponse)
def report_html(
    run_id: int, session: Session = SessionDep, actor: Actor = Depends(can_evaluate)
) -> HTMLResponse:
    """The self-contained HTML report (figures inline)."""
    from pair.evaluation.report.render import render_html

    run = service.get_run(session, actor, run_id)
    html = render_html(service.result_of(run), service.report_context(session, run))
    record(session, actor, "evaluation.report", "evaluation_run", str(run_id))
    return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_CSP})


@router.get("/{run_id}/cases")
def cases(
    run_id: int,
    format: str = "csv",
    session: Session = SessionDep,
    actor: Actor = Depends(can_evaluate),
) -> Response:
    """Per-case export (pseudonym, study, case, score, truth, prediction, outcome, viewer
    link) as CSV or JSON; 409 until the run is done."""
    if format not in export.FORMATS:
        raise Invalid(f"Unknown format {format!r}; use one of: {', '.join(export.FORMATS)}.")
    run = service.get_run(session, actor, run_id)
    rows = export.case_rows(run)
    record(session, actor, "evaluation.cases", "evaluation_run", str(run_id))
    name = f"evaluation-{run_id}-cases.{format}"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "json":
        return JSONResponse(rows, headers=disposition)
    return Response(export.to_csv(rows), media_type="text/csv; charset=utf-8", headers=disposition)


@router.get("/{run_id}/feedback")
def feedback(
    run_id: int,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(can_evaluate),
) -> dict[str, Any]:
    """The signed, aggregate-only feedback envelope (docs/feedback.schema.json)."""
    run = service.get_run(session, actor, run_id)
    return service.feedback_envelope(node, session, run)


class FeedbackIn(BaseModel):
    comment: str | None = None


@router.post("/{run_id}/feedback/submit")
def submit(
    run_id: int,
    body: FeedbackIn,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(can_evaluate),
) -> dict[str, Any]:
    """Send the signed feedback to the configured hub (retries; 502 when the hub fails)."""
    run = service.get_run(session, actor, run_id)
    out = service.submit_feedback(node, session, run, body.comment)
    record(
        session,
        actor,
        "evaluation.feedback",
        "evaluation_run",
        str(run_id),
        detail={"feedback_id": out["feedback_id"], "status": out["status_code"]},
    )
    return out
