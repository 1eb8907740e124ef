"""``pair evaluate``: run a registered algorithm on a cohort of the node and write the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.accounts.models import Facility
from pair.audit.service import Actor
from pair.cli.common import DataDir, console, err_console, handle_errors, node_for
from pair.core.errors import Invalid
from pair.evaluation.runs import export
from pair.evaluation.runs.plan import plan_check


def _facility_id(session: object, facility: str | None) -> int:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    if facility is not None:
        return accounts.get_facility(session, facility).id
    ids = list(session.scalars(select(Facility.id)))
    if len(ids) != 1:
        raise Invalid("This node has several facilities (or none): name one with --facility.")
    return ids[0]


@handle_errors
def evaluate(
    data_dir: DataDir,
    algorithm: Annotated[str, typer.Option(help="Algorithm ID or ID@VERSION.")],
    truth: Annotated[
        str | None,
        typer.Option(
            help="rt-pcr | report:MODULE:VALUE[,VALUE] | report:MODULE (multiclass: the "
            "category is the class) | csv (with --labels). Left out: the truth of the "
            "algorithm's use case plan."
        ),
    ] = None,
    cohort: Annotated[
        str, typer.Option(help="e.g. 'modality=CR,DX;covid19_positive=Yes,No;date=20200101-'.")
    ] = "",
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Label CSV: a label column and one key column: study_uid, series_uid, "
            "accession_number or patient_id."
        ),
    ] = None,
    compare: Annotated[
        str | None, typer.Option(help="Second algorithm ID[@VERSION] on the same cases.")
    ] = None,
    compare_report: Annotated[
        str | None,
        typer.Option(
            help="Compare with the final report category: MODULE:VALUE[,VALUE] = positive "
            "(multiclass algorithms: MODULE, the category as the readers' class)."
        ),
    ] = None,
    facility: Annotated[str | None, typer.Option(help="Facility name, code or id.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write report.html, result.json, feedback.json and the per-case "
            "cases.csv / cases.json (pseudonym, case, score, truth, prediction) here."
        ),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option()] = 0,
    prevalence: Annotated[float | None, typer.Option(help="Prevalence for PPV/NPV.")] = None,
    resume: Annotated[
        int | None, typer.Option(help="Continue an earlier run by its id (other inputs ignored).")
    ] = None,
) -> None:
    """Evaluate an algorithm on this node's cases: main table on screen, report in --out."""
    from pair.evaluation.report.render import write_report
    from pair.evaluation.runs import service
    from pair.evaluation.runs.multiclass import label_classes
    from pair.evaluation.runs.rows import RunOptions
    from pair.evaluation.runs.truth import map_label_csv
    from pair.evaluation.task import result_tables, summary_lines

    node = node_for(data_dir)
    with node.db.session() as s:
        if resume is not None:
            run_id = resume
        else:
            fid = _facility_id(s, facility)
            actor = Actor(None, "cli", fid, "admin", "cli")
            mapped = None
            if labels is not None:
                if not labels.is_file():
                    raise Invalid(f"No such label file: {labels}")
                mapped = map_label_csv(s, fid, labels.read_bytes(), label_classes(s, algorithm))
            opts: RunOptions = {
                "n_boot": n_boot,
                "seed": seed,
                "prevalence": prevalence,
                "compare_report": compare_report,
            }
            run_id = service.create_run(
                s,
                actor,
                algorithm=algorithm,
                cohort=cohort,
                truth=truth,
                compare=compare,
                labels=mapped,
                options=opts,
            ).id
    columns = (
        TextColumn("evaluation {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(str(run_id), total=None)
        run = service.execute_run(
            node, run_id, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    result = service.result_of(run)
    summary = run.cohort_summary
    console.print(
        f"run {run.id}: {run.algorithm_id}@{run.algorithm_version}; {summary['included']} of "
        f"{summary['selected']} series, {summary['patients']} patients; truth: {summary['truth']}",
        highlight=False,
    )
    for reason, n in summary["exclusions"].items():
        console.print(f"excluded {n}: {reason}", highlight=False)
    for f in run.failures:
        console.print(f"failed {f['case_id']} ({f['algorithm']}): {f['error']}", highlight=False)
    for table in result_tables(result):
        console.print(table)
    check = plan_check(run.options or {}, run.result)
    if check is not None:
        taken = ", ".join(check["from_plan"]) or "nothing"
        console.print(f"use case {check['ref']} (from its plan: {taken}): {check['message']}")
    for line in summary_lines(result):
        console.print(line, highlight=False)
    if out is not None:
        with node.db.session() as s:
            row = service.get_run(s, Actor.system("cli"), run.id)
            ctx = service.report_context(s, row)
            envelope = service.feedback_envelope(node, s, row)
        files = write_report(result, ctx, out)
        (out / "feedback.json").write_text(json.dumps(envelope, indent=2), encoding="utf-8")
        (out / "failures.json").write_text(json.dumps(run.failures, indent=2), encoding="utf-8")
        rows = export.case_rows(run)
        (out / "cases.csv").write_text(export.to_csv(rows), encoding="utf-8")
        (out / "cases.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
        console.print(f"report written to {files.html}", highlight=False)
