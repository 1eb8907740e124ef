"""``pair usecase validate|list|export``: check use-case files offline, read the node's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from pair.cli.common import DataDir, console, handle_errors, node_for
from pair.core.errors import Invalid
from pair.usecases import export, service
from pair.usecases.spec import load_file

usecase_app = typer.Typer(help="AI use cases (Define-AI structure, bound to CDEs).")


@usecase_app.command("validate")
@handle_errors
def validate(
    files: Annotated[list[Path], typer.Argument(help="Use-case YAML or JSON files.")],
) -> None:
    """Check files against the use-case schema and the CDE catalog (no node needed)."""
    for f in files:
        if not f.is_file():
            raise Invalid(f"No such file: {f}")
        uc = load_file(f)
        console.print(f"{f}: valid use case {uc.id} ({len(uc.outputs)} outputs)", highlight=False)


@usecase_app.command("list")
@handle_errors
def list_cmd(data_dir: DataDir) -> None:
    """The newest version of every use case on this node."""
    node = node_for(data_dir)
    with node.db.session() as s:
        service.ensure_shipped(s)
        for r in service.list_usecases(s, limit=500).items:
            typer.echo(f"{r.usecase_id}\tv{r.version}\t{r.status}\t{r.title}")


@usecase_app.command("export")
@handle_errors
def export_cmd(
    usecase_id: str,
    data_dir: DataDir,
    fmt: Annotated[Literal["json", "md"], typer.Option("--format")] = "json",
    version: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Print one use case as JSON or Markdown."""
    node = node_for(data_dir)
    with node.db.session() as s:
        service.ensure_shipped(s)
        row = service.get(s, usecase_id, version)
        text = (
            json.dumps(row.document, indent=2, ensure_ascii=False) + "\n"
            if fmt == "json"
            else export.markdown(row.document, row.status)
        )
    typer.echo(text, nl=False)
