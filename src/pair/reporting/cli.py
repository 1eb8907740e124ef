"""``pair report`` commands for module authors: list, check, evaluate, CARDS XML export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pair.cde.catalog import catalog
from pair.cli.common import console, handle_errors
from pair.core.errors import Invalid
from pair.reporting.cards_xml import export_xml, import_xml
from pair.reporting.engine import evaluate
from pair.reporting.loader import get_module, load_module_file, modules

report_app = typer.Typer(help="Structured reporting modules and the CDE catalog.")


@report_app.command("modules")
@handle_errors
def list_modules() -> None:
    """List the shipped reporting modules."""
    table = Table("id", "version", "label", "modality", "wording")
    for m in modules().values():
        table.add_row(m.id, m.version, m.label, m.modality, m.wording)
    console.print(table)


@report_app.command("cdes")
@handle_errors
def list_cdes() -> None:
    """List the CDE sets with their verification status."""
    table = Table("set", "name", "status", "set id", "element ids")
    for s in catalog().summary():
        counts: dict[str, int] = {}
        for e in s["elements"]:
            counts[e["verification"]] = counts.get(e["verification"], 0) + 1
        ids = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        table.add_row(s["id"], s["name"], s["status"], s["verification"], ids)
    console.print(table)


@report_app.command("check")
@handle_errors
def check(path: Path) -> None:
    """Validate a module file (YAML or CARDS 2.0 XML); print every problem."""
    if not path.is_file():
        raise Invalid(f"No file {path}.")
    if path.suffix.lower() == ".xml":
        m = import_xml(path.read_bytes(), path.name)
    else:
        m = load_module_file(path)
    console.print(f"{m.key}: {len(m.elements)} elements, {len(m.endpoints)} endpoints - valid")


@report_app.command("export-cards")
@handle_errors
def export_cards(
    module: str,
    out: Annotated[Path | None, typer.Option(help="File to write (default: stdout).")] = None,
) -> None:
    """Export a shipped module as CARDS 2.0 XML."""
    xml = export_xml(get_module(module))
    if out is None:
        typer.echo(xml)
    else:
        out.write_text(xml, encoding="utf-8")
        console.print(f"wrote {out}")


@report_app.command("evaluate")
@handle_errors
def evaluate_cmd(module: str, inputs: Path) -> None:
    """Evaluate a module with inputs from a JSON file and print the report text."""
    try:
        data = json.loads(inputs.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise Invalid(f"Cannot read inputs from {inputs}: {exc}") from None
    ev = evaluate(get_module(module), data)
    console.print(f"endpoint: {ev.endpoint} ({ev.endpoint_label})", highlight=False)
    typer.echo(ev.text)
