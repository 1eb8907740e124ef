"""Portal pages for evaluators: algorithms (list + upload), new evaluation, run progress, result."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.algorithms import service as algorithms
from pair.algorithms.package import PackageRejected
from pair.audit.service import Actor, record
from pair.clinical.dictionary import load_dictionary
from pair.core.errors import Invalid, PairError
from pair.core.node import Node
from pair.evaluation.runs import export, service
from pair.evaluation.runs import truth as truth_rules
from pair.evaluation.runs.api import create_and_start, worker_pool
from pair.evaluation.runs.cohort import Cohort, parse_cohort
from pair.evaluation.runs.models import RunStatus
from pair.reporting.loader import all_modules
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, get_node, page_roles
from pair.web.templating import register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
evaluator = page_roles(Role.EVALUATOR)
register_nav("Algorithms", "/algorithms", roles=(Role.EVALUATOR.value,), order=40)
register_nav("Evaluations", "/evaluations", roles=(Role.EVALUATOR.value,), order=41)
MODALITIES = ("CR", "DX", "CT")


def _algorithms_page(request: Request, session: Session, **extra: Any) -> Response:
    ctx = {"algorithms": algorithms.list_algorithms(session), **extra}
    return render(request, "runs/algorithms.html", ctx, extra.pop("status", 200))


@router.get("/algorithms")
def algorithm_list(
    request: Request, session: Session = SessionDep, _: Actor = Depends(evaluator)
) -> Response:
    return _algorithms_page(request, session)


@router.post("/algorithms")
async def algorithm_upload(
    request: Request,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(evaluator),
) -> Response:
    form = await request.form()
    upload = form.get("package")
    data = await upload.read() if upload is not None and not isinstance(upload, str) else b""
    if not data:
        return _algorithms_page(
            request, session, flash="Choose a package zip.", flash_kind="error", status=400
        )
    try:
        sub = algorithms.submit_algorithm(session, node, data, actor)
    except PackageRejected as exc:
        session.rollback()
        return _algorithms_page(
            request,
            session,
            problems=exc.problems,
            flash="Package refused.",
            flash_kind="error",
            status=422,
        )
    except PairError as exc:
        session.rollback()
        return _algorithms_page(
            request, session, flash=exc.message, flash_kind="error", status=exc.http_status
        )
    what = "registered" if sub.created else "was already registered (identical package)"
    return _algorithms_page(request, session, flash=f"{sub.algorithm.ref} {what}.")


@router.get("/evaluations")
def run_list(
    request: Request, session: Session = SessionDep, actor: Actor = Depends(evaluator)
) -> Response:
    return render(request, "runs/runs.html", {"runs": service.list_runs(session, actor)})


def _enum_values(name: str) -> list[str]:
    f = load_dictionary().get(name)
    return list(f.values) if f else []


def _form_context(session: Session, values: dict[str, Any]) -> dict[str, Any]:
    d = load_dictionary()
    modules = sorted(
        {(m.id, m.summary_element) for m in all_modules().values() if m.summary_element},
    )
    return {
        "algorithms": algorithms.list_algorithms(session),
        "modalities": MODALITIES,
        "covid_values": _enum_values("covid19_positive"),
        "sex_values": _enum_values("sex"),
        "age_bands": [b.label for b in d.age_bands],
        "modules": [m for m, _ in modules],
        # truth by report category: only modules whose summary is a category, each with its
        # categories (the form shows the chosen module's as checkboxes)
        "truth_modules": {
            m: cats for m, _ in modules if (cats := truth_rules.module_categories(m)) is not None
        },
        "v": values,
    }


@router.get("/evaluations/new")
def run_form(
    request: Request, session: Session = SessionDep, _: Actor = Depends(evaluator)
) -> Response:
    return render(request, "runs/new.html", _form_context(session, {"n_boot": 2000}))


def _cohort_from(form: Any) -> str:
    report_values = tuple(
        v.strip() for v in str(form.get("report_values", "")).split(",") if v.strip()
    )
    module = str(form.get("report_module", "")).strip() if report_values else ""
    if report_values and not module:
        raise Invalid("Choose the final report module for the report categories.")
    cohort = Cohort(
        modality=tuple(form.getlist("modality")),
        date_from=str(form.get("date_from", "")).replace("-", "") or None,
        date_to=str(form.get("date_to", "")).replace("-", "") or None,
        covid19_positive=tuple(form.getlist("covid19_positive")),
        sex=tuple(form.getlist("sex")),
        age_band=tuple(form.getlist("age_band")),
        report_module=module or None,
        report_values=report_values,
    )
    extra = str(form.get("cohort_extra", "")).strip()
    query = ";".join(p for p in (cohort.to_query(), extra) if p)
    return parse_cohort(query).to_query()  # precise errors for the typed part too


def _n_boot(form: Any) -> int:
    text = str(form.get("n_boot") or 2000).strip()
    if not text.isdigit() or not 100 <= int(text) <= 10000:
        raise Invalid(
            f"Bootstrap resamples must be a whole number from 100 to 10000, not {text!r}."
        )
    return int(text)


def _sentences(details: Any) -> list[str]:
    """Error details as lines a person reads: a list of strings as it is, a mapping as
    "key: value" lines, anything else left out (the message already says what is wrong)."""
    if isinstance(details, list):
        return [str(d) for d in details]
    if isinstance(details, dict):
        return [f"{k}: {v}" for k, v in details.items()]
    return []


@router.post("/evaluations/new")
async def run_create(
    request: Request,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(evaluator),
) -> Response:
    form = await request.form()
    truth = str(form.get("truth", ""))
    module = str(form.get("truth_module", "")).strip()
    # only the chosen module's category boxes count (the others are disabled in the browser,
    # but a form posted without JavaScript may carry them): values are "MODULE:VALUE"
    chosen = [
        str(v).split(":", 1)[1]
        for v in form.getlist("truth_values")
        if str(v).startswith(f"{module}:")
    ]
    if truth == "report":
        truth = f"report:{module}" + (f":{','.join(chosen)}" if chosen else "")
    labels = form.get("labels")
    label_bytes = (
        await labels.read() if labels is not None and not isinstance(labels, str) else None
    )
    values = {
        k: form.getlist(k)
        if k in ("modality", "covid19_positive", "sex", "age_band", "truth_values")
        else form.get(k)
        for k in form
        if k != "labels"
    }
    try:
        run_id = create_and_start(
            node,
            actor,
            algorithm=str(form.get("algorithm", "")),
            cohort=_cohort_from(form),
            truth=truth or None,
            compare=str(form.get("compare", "")) or None,
            labels=label_bytes or None,
            options={
                "n_boot": _n_boot(form),
                "seed": 0,
                "compare_report": str(form.get("compare_report", "")).strip() or None,
            },
            pool=worker_pool(request),
        )
    except (PairError, ValueError) as exc:
        ctx = _form_context(session, values)
        if isinstance(exc, PairError):
            ctx["flash"], ctx["details"] = exc.message, _sentences(exc.details)
        else:  # e.g. a pydantic ValidationError: never show its repr
            ctx["flash"], ctx["details"] = "The evaluation settings could not be read.", []
        ctx["flash_kind"] = "error"
        return render(request, "runs/new.html", ctx, 422)
    return RedirectResponse(f"/evaluations/{run_id}", status_code=303)


@router.get("/evaluations/{run_id}")
def run_page(
    run_id: int,
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(evaluator),
) -> Response:
    run = service.get_run(session, actor, run_id)
    ctx: dict[str, Any] = {
        "run": run,
        "finished": run.status in (RunStatus.DONE, RunStatus.FAILED),
        "multiclass": False,
    }
    if run.status == RunStatus.DONE:
        from pair.evaluation.report import figures
        from pair.evaluation.task import task_for

        result = service.result_of(run)
        task = task_for(result)
        context = service.report_context(session, run)
        figs = task.figures(result)
        try:
            ctx["images"] = {n: figures.data_uri(figures.png_bytes(f)) for n, f in figs.items()}
            ctx["captions"] = figures.captions(result.task)
        finally:
            figures.close(figs)
        ctx.update(r=result, ctx=context, checklist=task.checklist(context, result))
        ctx["errors"] = export.errors(export.case_rows(run))
        ctx["multiclass"] = task.name == "multiclass"
        record(session, actor, "evaluation.view", "evaluation_run", str(run_id))
    return render(request, "runs/run.html", ctx)
