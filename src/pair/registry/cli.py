"""``pair registry query|export|quality|approve|revoke|approvals`` on the hub's data dir.

The local command line acts as the system actor (the hub operator at the shell); criteria are
the same ``key=value`` terms as the pages and the API (``--where site=HOSPA``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pair.audit.service import Actor
from pair.cli.common import DataDir, console, handle_errors, node_for
from pair.registry import service
from pair.registry.cohort import parse_terms
from pair.registry.export import FORMATS, KINDS, export_cohort
from pair.registry.quality import quality_report

registry_app = typer.Typer(
    help="National registry at the hub: cohorts, exports, data quality, DICOM-download "
    "approvals; AI performance registry.",
    no_args_is_help=True,
)
Where = Annotated[
    list[str] | None,
    typer.Option("--where", "-w", help="Criterion key=value (repeat; e.g. site=HOSPA)."),
]


def _actor() -> Actor:
    return Actor.system("cli")


@registry_app.command("query")
@handle_errors
def query(
    data_dir: DataDir,
    where: Where = None,
    rows: Annotated[int, typer.Option(help="Also list this many studies.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts (total, by site, modality, report category), then optionally the first studies."""
    q = parse_terms(where or [])
    with node_for(data_dir).db.session() as s:
        counts = service.cohort_counts(s, _actor(), q)
        page = service.cohort_studies(s, _actor(), q, limit=rows) if rows else None
    if as_json:
        out = {"counts": counts.to_dict(), "studies": page.items if page else []}
        console.print_json(json.dumps(out, default=str))
        return
    console.print(f"{counts.studies} studies, {counts.patients} patients", highlight=False)
    for site in counts.by_site:
        console.print(f"  {site.code}: {site.studies} studies, {site.patients} patients")
    for row in page.items if page else []:
        console.print(
            f"{row['pseudonym']}  {row['site']}  {row['modalities']}  {row['study_date']}  "
            f"{row['categories']}",
            highlight=False,
            markup=False,
        )


@registry_app.command("export")
@handle_errors
def export(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option(help="File to write (replaced atomically).")],
    where: Where = None,
    kind: Annotated[str, typer.Option(help=f"One of: {', '.join(KINDS)}.")] = "studies",
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")] = "csv",
) -> None:
    """Write the cohort's study rows or DICOM-UID manifest as CSV or Parquet."""
    q = parse_terms(where or [])
    with node_for(data_dir).db.session() as s:
        written = export_cohort(s, _actor(), q, kind, fmt, out.parent)
    written.path.replace(out)
    console.print(f"wrote {written.rows} rows to {out}", highlight=False)


@registry_app.command("quality")
@handle_errors
def quality(
    data_dir: DataDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Data-quality findings per site."""
    node = node_for(data_dir)
    with node.db.session() as s:
        sites = quality_report(s, _actor(), node.settings.registry_late_days)
    if as_json:
        console.print_json(json.dumps([x.to_dict() for x in sites], default=str))
        return
    for site in sites:
        rate = site.quarantine_rate
        console.print(
            f"{site.code}: {site.studies} studies, quarantine rate "
            f"{'-' if rate is None else f'{100 * rate:.1f}%'}",
            highlight=False,
        )
        for f in site.findings:
            console.print(f"  {f.check:18} {f.element:30} {f.count}", highlight=False)


@registry_app.command("approve")
@handle_errors
def approve(
    user: Annotated[str, typer.Argument(help="Registry analyst or researcher account name.")],
    data_dir: DataDir,
    note: Annotated[str, typer.Option(help="Why (data use agreement, project).")] = "",
) -> None:
    """Approve a user for DICOM download from the registry (audited)."""
    with node_for(data_dir).db.session() as s:
        service.approve(s, _actor(), user, note)
    console.print(f"approved {user} for registry DICOM download", highlight=False)


@registry_app.command("revoke")
@handle_errors
def revoke(user: Annotated[str, typer.Argument()], data_dir: DataDir) -> None:
    """Withdraw a user's DICOM-download approval (audited)."""
    with node_for(data_dir).db.session() as s:
        service.revoke(s, _actor(), user)
    console.print(f"revoked {user}'s registry DICOM download", highlight=False)


@registry_app.command("approvals")
@handle_errors
def approvals(data_dir: DataDir) -> None:
    """List DICOM-download approvals (approved and revoked)."""
    with node_for(data_dir).db.session() as s:
        for name, row in service.approvals(s):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "approved"
            console.print(
                f"{name}  {state}  since {row.approved_at:%Y-%m-%d}  {row.note}",
                highlight=False,
                markup=False,
            )
