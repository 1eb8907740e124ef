"""``pair offline-evaluation``: evaluate a CSV of scores, build and send signed feedback, make keys.

Files only, no node (the old name ``pair evaluation`` still works, hidden, with a warning).

The database-backed ``pair evaluate`` (cohort + algorithm run) reuses ``evaluate_scores`` and
``tables.main_table``; these commands work on files only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pair.cli.common import console, handle_errors
from pair.core.errors import Invalid
from pair.evaluation.report.context import EvaluationContext

# numpy/scipy/matplotlib are imported inside the commands so that `pair --help` stays fast.

evaluation_app = typer.Typer(help="Statistics, reports and feedback for local AI evaluation.")


def _context(path: Path | None) -> EvaluationContext:
    if path is None:
        return EvaluationContext()
    try:
        return EvaluationContext.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise Invalid(f"{path} is not a valid report context: {exc}") from exc


@evaluation_app.command("scores")
@handle_errors
def scores_cmd(
    csv_path: Annotated[Path, typer.Argument(help="CSV with one row per case.")],
    label: Annotated[str, typer.Option(help="Reference label column (0/1, yes/no, ...).")],
    score: Annotated[str, typer.Option(help="Algorithm score column (higher = positive).")],
    threshold: Annotated[float, typer.Option(help="Declared operating threshold.")],
    group: Annotated[list[str] | None, typer.Option(help="Subgroup column (repeatable).")] = None,
    cluster: Annotated[str | None, typer.Option(help="Patient id column.")] = None,
    compare: Annotated[str | None, typer.Option(help="Comparator score column.")] = None,
    compare_threshold: Annotated[float | None, typer.Option()] = None,
    prevalence: Annotated[float | None, typer.Option(help="Prevalence for PPV/NPV.")] = None,
    target_sensitivity: Annotated[float | None, typer.Option()] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option()] = 0,
    bca: Annotated[bool, typer.Option(help="BCa instead of percentile intervals.")] = False,
    context: Annotated[Path | None, typer.Option(help="EvaluationContext JSON file.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write report.html, result.json, figures.")
    ] = None,
    pdf: Annotated[bool, typer.Option(help="Also write report.pdf.")] = False,
) -> None:
    """Evaluate binary scores from a CSV and print the main table."""
    from pair.evaluation.report.render import write_report
    from pair.evaluation.tables import load_scores_csv
    from pair.evaluation.task import TASKS, Cases, Options, result_tables, summary_lines

    table = load_scores_csv(csv_path, label, score, groups=group, cluster=cluster, compare=compare)
    cases = Cases(
        table.y,
        table.scores,
        groups=table.groups or None,
        clusters=table.clusters,
        compare=table.compare,
        names=(score, compare or "comparator"),
        exclusions=table.exclusions,
    )
    options = Options(
        n_boot=n_boot,
        seed=seed,
        threshold=threshold,
        compare_threshold=compare_threshold,
        prevalence=prevalence,
        target_sensitivity=target_sensitivity,
        boot_method="bca" if bca else "percentile",
    )
    result = TASKS["binary"].evaluate(cases, options)
    for t in result_tables(result):
        console.print(t)
    for line in summary_lines(result):
        console.print(line, highlight=False)
    if out is not None:
        files = write_report(result, _context(context), out, pdf=pdf)
        console.print(f"report written to {files.html}")


@evaluation_app.command("keygen")
@handle_errors
def keygen_cmd(
    path: Annotated[Path, typer.Argument(help="Key file to create (mode 0600).")],
) -> None:
    """Create a new feedback signing key; register it with the hub out of band."""
    from pair.evaluation import feedback as fb

    try:
        fb.generate_key(path)
    except FileExistsError as exc:
        raise Invalid(f"{path} exists; refusing to overwrite a signing key") from exc
    console.print(f"key written to {path}")


@evaluation_app.command("feedback")
@handle_errors
def feedback_cmd(
    result_json: Annotated[Path, typer.Argument(help="result.json of an evaluation.")],
    key: Annotated[Path, typer.Option(help="Signing key file.")],
    key_id: Annotated[str, typer.Option(help="Key id registered with the hub.")],
    context: Annotated[Path | None, typer.Option(help="EvaluationContext JSON file.")] = None,
    comment: Annotated[str | None, typer.Option(help="Free-text site feedback.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the signed envelope here.")] = None,
    url: Annotated[str | None, typer.Option(help="Hub URL to POST to.")] = None,
    token: Annotated[str | None, typer.Option(envvar="PAIR_HUB_TOKEN", help="Hub token.")] = None,
    retries: Annotated[int, typer.Option()] = 3,
) -> None:
    """Build the aggregate-only feedback, sign it, and write and/or send it."""
    from pair.evaluation import feedback as fb
    from pair.evaluation.result import load_result

    try:
        result = load_result(json.loads(result_json.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise Invalid(f"{result_json} is not a readable evaluation result: {exc}") from exc
    payload = fb.build_feedback_payload(result, _context(context), comment=comment)
    envelope = fb.sign_payload(payload, fb.load_key(key), key_id)
    if out is not None:
        out.write_text(json.dumps(envelope, indent=2), encoding="utf-8")
        console.print(f"signed feedback written to {out}")
    if url is not None:
        if not token:
            raise Invalid("--token (or PAIR_HUB_TOKEN) is required with --url")
        res = fb.submit_feedback(envelope, url, token, retries=retries)
        console.print(f"delivered (HTTP {res.status_code}) after {res.attempts} attempt(s)")
