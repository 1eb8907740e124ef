"""``pair algorithm add|add-demo|check|list|show|run|schema``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pair.algorithms import DEMO_PACKAGE, service
from pair.algorithms.cases import Grouping, cases_from_paths, grouping_for, write_results_csv
from pair.algorithms.manifest import manifest_json_schema_text
from pair.algorithms.runner import run_inference
from pair.audit.service import Actor, record
from pair.cli.common import DataDir, console, err_console, handle_errors, node_for

algorithm_app = typer.Typer(help="AI algorithm packages: submit, validate, list.")

PackageArg = Annotated[Path, typer.Argument(help="Package folder or .zip file.")]


@algorithm_app.command("add")
@handle_errors
def add(package: PackageArg, data_dir: DataDir) -> None:
    """Validate a package (schema, checksum, ONNX, sandboxed smoke run) and register it."""
    node = node_for(data_dir)
    with node.db.session() as s:
        sub = service.submit_algorithm(s, node, package, Actor.system("cli"))
        a = sub.algorithm
        state = "registered" if sub.created else "already registered (identical)"
        console.print(f"algorithm {a.algorithm_id} {a.version} {state}; sha256 {a.sha256}")


@algorithm_app.command("add-demo")
@handle_errors
def add_demo(data_dir: DataDir) -> None:
    """Register the DEMO package shipped with PAIR (synthetic data, not for clinical use)."""
    add(DEMO_PACKAGE, data_dir)


@algorithm_app.command("check")
@handle_errors
def check(package: PackageArg, data_dir: DataDir) -> None:
    """Run every validation without registering anything."""
    node = node_for(data_dir)
    m = service.check_package(node, package)
    console.print(f"package {m.id} {m.version} is valid")


@algorithm_app.command("list")
@handle_errors
def list_(data_dir: DataDir) -> None:
    """Every registered version, newest first within each id."""
    node = node_for(data_dir)
    table = Table("id", "version", "name", "vendor", "status", "submitted", "sha256")
    with node.db.session() as s:
        for a in service.list_algorithms(s):
            table.add_row(
                a.algorithm_id,
                a.version,
                a.name,
                a.manifest.get("vendor", ""),
                a.status,
                a.created_at.strftime("%Y-%m-%d %H:%M"),
                a.sha256[:12],
            )
    console.print(table)


@algorithm_app.command("show")
@handle_errors
def show(ref: Annotated[str, typer.Argument(help="ID or ID@VERSION.")], data_dir: DataDir) -> None:
    """Print one version's manifest as JSON (latest version when none is given)."""
    import json

    node = node_for(data_dir)
    with node.db.session() as s:
        a = service.get_algorithm(s, *service.parse_ref(ref))
        typer.echo(json.dumps(a.manifest, indent=2))


@algorithm_app.command("run")
@handle_errors
def run(
    ref: Annotated[str, typer.Argument(help="ID or ID@VERSION.")],
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders.")],
    data_dir: DataDir,
    group: Annotated[
        Grouping | None,
        typer.Option(
            help="One case per instance, series or study (default: instance; series for a "
            "slab (2.5D) package, which takes only series)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write results as CSV here.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore cached results.")] = False,
) -> None:
    """Run a registered algorithm on local DICOM files in the sandbox, with a progress bar."""
    node = node_for(data_dir)
    with node.db.session() as s:
        row = service.get_algorithm(s, *service.parse_ref(ref))
        algo = service.load_algorithm(node, row)
    cases = cases_from_paths(paths, grouping_for(algo.manifest.input, group))
    cache = None if no_cache else service.inference_cache_dir(node)
    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task(f"{algo.ref}", total=len(cases))
        for r in run_inference(algo, cases, cache, lambda n, _r: bar.update(task, completed=n)):
            results.append(r)
    failed = [r for r in results if not r.ok]
    with node.db.session() as s:
        record(
            s,
            Actor.system("cli"),
            "algorithm.run",
            "algorithm",
            algo.ref,
            detail={"cases": len(results), "failed": len(failed)},
        )
    names = [c.name for c in algo.manifest.output.classes]
    if out is not None:
        with open(out, "w", newline="") as fh:
            write_results_csv(fh, names, results)
    else:
        write_results_csv(sys.stdout, names, results)
    err_console.print(f"{len(results) - len(failed)} case(s) done, {len(failed)} failed")
    for r in failed:
        err_console.print(f"  {r.case_id}: {r.error}: {r.message}", highlight=False)


@algorithm_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of pair-algorithm.yaml (as published in docs/)."""
    typer.echo(manifest_json_schema_text(), nl=False)
