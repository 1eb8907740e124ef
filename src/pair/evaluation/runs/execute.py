"""Execute one evaluation run: cohort and truth, inference, the case table, the statistics.

``execute_run`` is the one code path for the CLI, the API and the portal (see
``pair.evaluation.runs.service``); its stages are: select the cohort and resolve the truth, run the
algorithm(s) (cached per algorithm version x instance, so a resumed run only computes what is
missing), build the typed case table, and hand it to the task's statistics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np

from pair.accounts.models import Role
from pair.algorithms import service as algorithms
from pair.algorithms.manifest import Manifest
from pair.algorithms.runner import Case, WorkerPool, run_inference
from pair.audit.service import Actor, record
from pair.core.errors import Conflict, Invalid, NotFound
from pair.core.node import Node
from pair.evaluation.result import AnyResult
from pair.evaluation.runs import jobs
from pair.evaluation.runs.cohort import CohortCase, parse_cohort, select_cohort
from pair.evaluation.runs.models import EvaluationRun, RunStatus
from pair.evaluation.runs.multiclass import (
    case_probabilities,
    output_classes,
    reader_probabilities,
)
from pair.evaluation.runs.rows import (
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    DEFAULT_THRESHOLD,
    CaseRow,
    RunOptions,
    group_columns,
    threshold_source,
)
from pair.evaluation.runs.truth import describe_spec, resolve_truth
from pair.evaluation.stats.bootstrap import patients_repeat
from pair.evaluation.task import TASKS, Cases, Options

Progress = Callable[[int, int], None]


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
    """The task's ``evaluate`` on the case table (binary scores, or multiclass probability
    vectors against class indices): patient clusters when a patient has several cases."""
    if not rows:
        raise Invalid(f"No case left to evaluate (excluded: {exclusions or 'none selected'}).")
    y = np.array([r["y"] for r in rows], dtype=np.int64)
    patients = [r["patient"] for r in rows]
    boot = Options(
        n_boot=int(opts.get("n_boot", DEFAULT_N_BOOT)), seed=int(opts.get("seed", DEFAULT_SEED))
    )
    classes = output_classes(manifest)
    if classes is not None:
        cases = Cases(
            y,
            np.array([r["probs"] for r in rows], dtype=np.float64),
            groups=group_columns(rows),
            clusters=np.array(patients, dtype=object),
            compare=np.array([r["probs_compare"] for r in rows], dtype=np.float64)
            if compare
            else None,
            names=names if compare else ("algorithm", "comparator"),
            exclusions=exclusions,
        )
        options = replace(
            boot,
            classes=tuple(c.name for c in classes),
            class_labels=tuple(c.label for c in classes),
            ordinal=manifest.output.ordinal,
        )
        return TASKS["multiclass"].evaluate(cases, options)
    threshold = manifest.output.recommended_threshold
    cases = Cases(
        y,
        np.array([r["score"] for r in rows], dtype=np.float64),
        groups=group_columns(rows),
        clusters=np.array(patients, dtype=object) if patients_repeat(patients) else None,
        compare=np.array([r["score_compare"] for r in rows]) if compare else None,
        names=names,
        exclusions=exclusions,
    )
    options = replace(
        boot,
        threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
        threshold_source=threshold_source(threshold),
        compare_threshold=opts.get("compare_threshold"),
        prevalence=opts.get("prevalence"),
        target_sensitivity=opts.get("target_sensitivity"),
        target_specificity=opts.get("target_specificity"),
        fixed_threshold=opts.get("fixed_threshold"),
    )
    return TASKS["binary"].evaluate(cases, options)
