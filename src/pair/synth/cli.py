"""``pair synth``: write a synthetic multi-site DICOM cohort with ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pair.cli.common import console, handle_errors
from pair.synth.generator import generate


@handle_errors
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination folder.")],
    sites: Annotated[int, typer.Option("--sites", help="Number of sites.")] = 3,
    patients: Annotated[int, typer.Option("--patients", help="Patients per site.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same bytes.")] = 0,
    ct_slices: Annotated[int, typer.Option("--ct-slices", help="Axial CT slices.")] = 40,
    ct_size: Annotated[int, typer.Option("--ct-size", help="CT matrix size (pixels).")] = 256,
    cxr_size: Annotated[
        int, typer.Option("--cxr-size", help="Radiograph matrix size (pixels).")
    ] = 1024,
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes (0 = one per CPU, at most 8).")
    ] = 0,
) -> None:
    """Generate SYNTHETIC chest CT and radiograph studies (fake PHI) with ground-truth CSVs."""
    with Progress(
        TextColumn("[bold]synth[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("patients"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("patients", total=sites * patients)
        summary = generate(
            out,
            sites,
            patients,
            seed,
            workers=workers or None,
            progress=lambda n: bar.advance(task, n),
            ct_slices=ct_slices,
            ct_size=ct_size,
            cxr_size=cxr_size,
        )
    mods = ", ".join(f"{k} {v}" for k, v in sorted(summary.modalities.items()))
    console.print(
        f"Wrote {summary.studies} studies ({mods}), {summary.instances} files, "
        f"{summary.bytes / 1e6:.1f} MB to {out} in {summary.seconds:.1f} s. "
        f"Ground truth: {summary.ground_truth.name}, {summary.clinical.name}."
    )
