"""Create and execute evaluation runs; build their report context, HTML and signed feedback.

``execute_run`` is the one code path for the CLI (synchronous, with a progress bar), the API and
the portal (a background thread). It is resumable: inference results are cached per algorithm
version x instance by ``pair.algorithms.runner``, so running a crashed or interrupted run again
only computes what is missing. One executor at a time: see ``pair.evalruns.jobs``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility, Role
from pair.algorithms import service as algorithms
from pair.algorithms.manifest import Manifest
from pair.algorithms.runner import Case, WorkerPool, run_inference
from pair.audit.service import Actor, record
from pair.core.errors import Conflict, Forbidden, Invalid, NotFound
from pair.core.node import Node
from pair.evalruns import jobs
from pair.evalruns.cohort import CohortCase, parse_cohort, select_cohort
from pair.evalruns.models import EvaluationRun, RunStatus
from pair.evalruns.multiclass import (
    case_probabilities,
    check_run_inputs,
    evaluate_class_cases,
    output_classes,
    reader_probabilities,
)
from pair.evalruns.rows import (
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    CaseRow,
    RunOptions,
    group_columns,
    with_defaults,
)
from pair.evalruns.truth import check_spec, describe_spec, resolve_truth
from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.report.context import EvaluationContext
from pair.evaluation.result import AnyResult, load_result
from pair.evaluation.stats.bootstrap import patients_repeat

RUN_ROLES = frozenset({Role.ADMIN.value, Role.EVALUATOR.value})
Progress = Callable[[int, int], None]


def _require(actor: Actor) -> None:
    if actor.role not in RUN_ROLES:
        raise Forbidden("Only evaluators and admins can run evaluations.")


def create_run(
    session: Session,
    actor: Actor,
    *,
    algorithm: str,
    cohort: str,
    truth: str,
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
    spec = check_spec(truth)
    if spec == "csv" and not labels:
        raise Invalid("Truth source csv needs a label file.")
    a = algorithms.get_algorithm(session, *algorithms.parse_ref(algorithm))
    b = algorithms.get_algorithm(session, *algorithms.parse_ref(compare)) if compare else None
    opts = with_defaults(options)
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
        detail={"algorithm": a.ref, "compare": b.ref if b else None, "truth": spec},
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


class _Reporter:
    """Writes done/total to the row at most every 0.5 s (short transactions of their own)."""

    def __init__(self, node: Node, run_id: int, total: int, cb: Progress | None) -> None:
        self.node, self.run_id, self.total, self.cb = node, run_id, total, cb
        self.done = 0
        self.cached = 0  # inferences replayed from the cache (a resumed run)
        self._last = 0.0

    def step(self, force: bool = False) -> None:
        if self.cb is not None:
            self.cb(self.done, self.total)
        now = time.monotonic()
        if force or now - self._last > 0.5:
            self._last = now
            with self.node.db.session() as s:
                row = s.get(EvaluationRun, self.run_id)
                if row is not None:
                    row.done = self.done


def _infer(
    node: Node, algo_row: Any, cases: list[CohortCase], rep: _Reporter, pool: WorkerPool | None
) -> dict[str, Any]:
    algo = algorithms.load_algorithm(node, algo_row)
    out: dict[str, Any] = {}
    todo = [Case(case_id=c.case_id, paths=c.paths, shas=c.shas or None) for c in cases]
    cache = algorithms.inference_cache_dir(node)
    for r in run_inference(algo, todo, cache, pool=pool):
        if pool is not None and pool.closed:  # server stopping: its workers are being killed
            raise jobs.Interrupted("The server stopped during inference; the run resumes at start.")
        out[r.case_id] = r
        rep.done += 1
        rep.cached += int(r.cached)
        rep.step()
    return out


def execute_run(
    node: Node,
    run_id: int,
    progress: Progress | None = None,
    pool: WorkerPool | None = None,
    *,
    token: str | None = None,
) -> EvaluationRun:
    """Run (or resume) an evaluation to the end; the row ends 'done' or 'failed' with a reason.

    Claims the run first (``Conflict`` if another executor has it) unless the caller already
    holds its runner ``token``; with a ``pool``, inference uses the server's warm workers. When
    the pool closes (server shutdown) the run goes back to 'queued' for the next start-up.
    """
    token = token or jobs.claim(node, run_id)
    try:
        with jobs.Heartbeat(node, run_id, token):
            return _execute(node, run_id, progress, pool, token)
    except jobs.Interrupted as exc:
        jobs.requeue(node, run_id, token, str(exc))
        raise
    except Exception as exc:
        with node.db.session() as s:
            row = s.get(EvaluationRun, run_id)
            if row is not None and row.runner == token:
                row.status = RunStatus.FAILED
                row.error = str(exc) or type(exc).__name__
                row.finished_at = datetime.now(UTC)
        raise
    finally:
        jobs.release(token)


def _execute(
    node: Node, run_id: int, progress: Progress | None, pool: WorkerPool | None, token: str
) -> EvaluationRun:
    with node.db.session() as s:
        run = s.get(EvaluationRun, run_id)
        if run is None:
            raise NotFound(f"No evaluation run {run_id}.")
        cohort = parse_cohort(run.cohort_query)
        cases = select_cohort(s, node.settings.storage_dir, run.facility_id, cohort)
        a_row = algorithms.get_algorithm(s, run.algorithm_id, run.algorithm_version)
        a_manifest = Manifest.model_validate(a_row.manifest)
        classes = output_classes(a_manifest)
        truth = resolve_truth(
            s, run.facility_id, run.truth_source, cases, run.truth_labels, classes
        )
        b_row = (
            algorithms.get_algorithm(s, run.compare_algorithm_id, run.compare_version)
            if run.compare_algorithm_id and run.compare_version
            else None
        )
        exclusions: dict[str, int] = {}
        included: list[tuple[CohortCase, int]] = []
        reader = None
        if run.options.get("compare_report"):
            reader = resolve_truth(
                s, run.facility_id, f"report:{run.options['compare_report']}", cases, None, classes
            )
            reader.missing_reason += " (comparison)"
            reader.reasons_by_study = {
                k: f"{v} (comparison)" for k, v in reader.reasons_by_study.items()
            }
        for c in cases:
            y = truth.label(c)
            if y is None:
                exclusions[truth.reason(c)] = exclusions.get(truth.reason(c), 0) + 1
            elif reader is not None and reader.label(c) is None:
                exclusions[reader.reason(c)] = exclusions.get(reader.reason(c), 0) + 1
            elif c.modality not in a_manifest.modality:
                exclusions["modality not accepted by the algorithm"] = (
                    exclusions.get("modality not accepted by the algorithm", 0) + 1
                )
            else:
                included.append((c, y))
        run.status = RunStatus.RUNNING
        run.error = ""
        run.started_at = run.started_at or datetime.now(UTC)
        run.total = len(included) * (2 if b_row else 1)
        run.done = 0
        opts = cast(RunOptions, dict(run.options))
        names = (a_row.ref, b_row.ref if b_row else "comparator")
        if reader is not None:
            names = (a_row.ref, f"report category ({run.options['compare_report']})")
    rep = _Reporter(node, run_id, len(included) * (2 if b_row else 1), progress)
    rep.step(force=True)
    chosen = [c for c, _ in included]
    res_a = _infer(node, a_row, chosen, rep, pool)
    res_b = _infer(node, b_row, chosen, rep, pool) if b_row else {}
    failures: list[dict[str, Any]] = []
    rows: list[CaseRow] = []
    for c, y in included:
        bad = [
            (n, r)
            for n, r in ((names[0], res_a[c.case_id]), (names[1], res_b.get(c.case_id)))
            if r is not None and (not r.ok or (r.score is None and classes is None))
        ]
        if bad:
            for name, r in bad:
                failures.append(
                    {
                        "case_id": c.case_id,
                        "patient": c.pseudonym,
                        "algorithm": name,
                        "error": r.error or "no score",
                        "message": r.message,
                    }
                )
            reason = f"inference failed: {bad[0][1].error or 'no score'}"
            exclusions[reason] = exclusions.get(reason, 0) + 1
            continue
        row = CaseRow(
            case_id=c.case_id,
            study_uid=c.study_uid,
            patient=c.pseudonym,
            y=y,
            score=res_a[c.case_id].score,
            study_date=c.study_date,
            n_images=res_a[c.case_id].n_images,
            sex=c.sex,
            age_band=c.age_band,
            manufacturer=c.manufacturer,
            site=c.site,
            modality=c.modality,
        )
        if classes is not None:
            row["probs"] = case_probabilities(classes, res_a[c.case_id].outputs)
            if b_row:
                row["probs_compare"] = case_probabilities(classes, res_b[c.case_id].outputs)
            elif reader is not None:
                row["probs_compare"] = reader_probabilities(len(classes), reader.label(c))
        if b_row:
            row["score_compare"] = res_b[c.case_id].score
        elif reader is not None:
            row["score_compare"] = float(reader.label(c) or 0)
        rows.append(row)
    if reader is not None:
        opts.setdefault("compare_threshold", 0.5)
    compare = b_row is not None or reader is not None
    result = evaluate_cases(rows, a_manifest, opts, names, exclusions, compare=compare)
    summary = {
        "selected": len(cases),
        "included": len(rows),
        "exclusions": exclusions,
        "patients": len({r["patient"] for r in rows}),
        "truth": describe_spec(truth.spec),
        "inferences_from_cache": rep.cached,
    }
    with node.db.session() as s:
        run = s.get(EvaluationRun, run_id)
        assert run is not None
        if run.runner != token:
            raise Conflict(f"Evaluation run {run_id} was taken over by another process.")
        run.done = rep.done
        run.failures = failures
        run.cases = [dict(r) for r in rows]
        run.cohort_summary = summary
        run.result = json.loads(result.model_dump_json())
        run.status = RunStatus.DONE
        run.finished_at = datetime.now(UTC)
        who = Actor(None, run.created_by, run.facility_id, Role.EVALUATOR.value, "evaluation")
        record(
            s,
            who,
            "evaluation.run",
            "evaluation_run",
            str(run_id),
            detail={"cases": len(rows), "excluded": sum(exclusions.values())},
        )
        s.flush()
        s.expunge(run)
    return run


def evaluate_cases(
    rows: list[CaseRow],
    manifest: Manifest,
    opts: RunOptions,
    names: tuple[str, str],
    exclusions: dict[str, int],
    *,
    compare: bool,
) -> AnyResult:
    """``evaluate_scores`` on the case table: patient clusters when a patient has several cases.

    Multiclass algorithms go to ``evaluate_class_cases`` (class-index ``y``, ``probs``)."""
    if output_classes(manifest) is not None:
        return evaluate_class_cases(rows, manifest, exclusions, opts, names if compare else None)
    if not rows:
        raise Invalid(f"No case left to evaluate (excluded: {exclusions or 'none selected'}).")
    y = np.array([r["y"] for r in rows], dtype=np.int64)
    s = np.array([r["score"] for r in rows], dtype=np.float64)
    patients = [r["patient"] for r in rows]
    clustered = patients_repeat(patients)
    threshold = manifest.output.recommended_threshold
    return evaluate_scores(
        y,
        s,
        0.5 if threshold is None else threshold,
        groups=group_columns(rows),
        clusters=np.array(patients, dtype=object) if clustered else None,
        compare_scores=np.array([r["score_compare"] for r in rows]) if compare else None,
        compare_threshold=opts.get("compare_threshold"),
        prevalence=opts.get("prevalence"),
        target_sensitivity=opts.get("target_sensitivity"),
        names=names,
        n_boot=int(opts.get("n_boot", DEFAULT_N_BOOT)),
        seed=int(opts.get("seed", DEFAULT_SEED)),
        exclusions=exclusions,
    )


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
    ``PAIR_FEEDBACK_TOKEN``), with ``PAIR_FEEDBACK_RETRIES`` retries and exponential backoff."""
    from pair.evaluation import feedback as fb

    settings = node.settings
    url, token = settings.feedback_url, settings.feedback_token.get_secret_value()
    if not url or not token:
        raise Invalid("No feedback hub configured: set PAIR_FEEDBACK_URL and PAIR_FEEDBACK_TOKEN.")
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
