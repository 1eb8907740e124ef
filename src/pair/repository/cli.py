"""``pair import``: bulk import of folders, zips and DICOMDIRs with progress and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from pair.audit.service import Actor
from pair.cli.common import DataDir, console, handle_errors, node_for
from pair.repository.service import import_paths, resolve_facility


@handle_errors
def import_command(
    paths: Annotated[list[Path], typer.Argument(help="Folders, files, zips or DICOMDIRs.")],
    data_dir: DataDir,
    facility: Annotated[str | None, typer.Option(help="Facility the data belongs to.")] = None,
) -> None:
    """Import DICOM into the repository (de-identified on the way in). Resumable."""
    node = node_for(data_dir)
    with node.db.session() as s:
        fac = resolve_facility(s, facility)
        fac_id, fac_name = fac.id, fac.name
    actor = Actor.system("cli:import", fac_id)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(f"importing into {fac_name}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = import_paths(node, fac_id, paths, actor, progress=progress)
    table = Table("outcome", "count")
    for name in ("stored", "duplicate", "quarantined", "rejected", "skipped"):
        table.add_row(name, str(getattr(summary, name)))
    console.print(table)
    # one line per file whatever the terminal width, so a long path is never split and the
    # list can be grepped or copied
    for label, reason in summary.quarantines[:50]:
        console.print(
            f"[yellow]quarantined[/yellow] {label}: {reason}", highlight=False, soft_wrap=True
        )
    for label, reason in summary.rejections[:200]:
        console.print(f"[red]rejected[/red] {label}: {reason}", highlight=False, soft_wrap=True)
    if len(summary.rejections) > 200:
        console.print(f"... and {len(summary.rejections) - 200} more rejections")


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
