"""``pair deid`` (offline de-identification of a folder) and ``pair deid-export-mapping``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pair.accounts.service import get_facility, list_facilities
from pair.cli.common import DataDir, console, err_console, handle_errors, node_for
from pair.core.errors import Invalid
from pair.deid import service
from pair.deid.profile import profile_for


@handle_errors
def deid(
    data_dir: DataDir,
    src: Annotated[Path, typer.Argument(help="Folder of DICOM files to de-identify.")],
    dst: Annotated[Path, typer.Argument(help="Output folder (created).")],
    facility: Annotated[
        str | None, typer.Option(help="Facility name, code or id (default: the only one).")
    ] = None,
) -> None:
    """De-identify a folder offline with the node's profile and keys (same as ingest)."""
    node = node_for(data_dir)
    with node.db.session() as s:
        if facility is None:
            facilities = list_facilities(s)
            if len(facilities) != 1:
                raise Invalid("This node has several facilities (or none); pass --facility.")
            facility_id = facilities[0].id
        else:
            facility_id = get_facility(s, facility).id
    with Progress(
        TextColumn("de-identifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("deid", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = service.deidentify_folder(node, facility_id, src, dst, progress=tick)
    console.print(
        f"written: {len(summary.written)}  quarantined (residual PHI): "
        f"{len(summary.quarantined)}  rejected: {len(summary.rejected)}  "
        f"flagged for burned-in text review: {len(summary.flagged)}"
    )
    for rel, reasons in summary.quarantined:
        console.print(f"[yellow]quarantined[/yellow] {rel}: {len(reasons)} finding(s), see .json")
    for rel, reason in summary.rejected:
        console.print(f"[red]rejected[/red] {rel}: {reason}", highlight=False)
    if summary.quarantined or summary.rejected:
        raise typer.Exit(4)


@handle_errors
def deid_export_mapping(
    data_dir: DataDir,
    facility: Annotated[str, typer.Option(help="Facility name, code or id.")],
    out: Annotated[Path, typer.Argument(help="CSV file to write.")],
) -> None:
    """Export the re-identification mapping (admin only: the file CONTAINS PHI)."""
    node = node_for(data_dir)
    with node.db.session() as s:
        rows = service.export_mapping(s, get_facility(s, facility).id)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        out.chmod(0o600)
        writer = csv.DictWriter(fh, fieldnames=list(service.EXPORT_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    err_console.print(
        "[bold red]warning:[/bold red] this file contains protected health information "
        "(original names, IDs, date shifts). Keep it at the site and delete it when done."
    )
    console.print(f"{len(rows)} row(s) written to {out}")


@handle_errors
def deid_profile(
    data_dir: DataDir,
    facility: Annotated[str, typer.Option(help="Facility name, code or id.")],
    profile_file: Annotated[
        Path | None, typer.Argument(help="Profile YAML to use for this facility.")
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Use the site default again.")] = False,
) -> None:
    """Show, set (validated) or reset a facility's de-identification profile."""
    node = node_for(data_dir)
    with node.db.session() as s:
        fac = get_facility(s, facility)
        if profile_file is not None and reset:
            raise Invalid("Give a profile file or --reset, not both.")
        if profile_file is not None:
            service.set_facility_profile(s, fac, profile_file.read_text("utf-8"))
        elif reset:
            service.set_facility_profile(s, fac, None)
        profile = profile_for(fac.deid_profile)
        source = "facility" if fac.deid_profile else "site default"
    console.print(f"{fac.name}: {profile.label} ({source})")
    for name in profile.options.enabled():
        console.print(f"  {name}")
    console.print(f"  date shift {profile.date_shift.min_days}..{profile.date_shift.max_days} days")
