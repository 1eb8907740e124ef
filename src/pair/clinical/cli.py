"""``pair clinical import``: load clinical data from a site CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.cli.common import DataDir, console, err_console, handle_errors, node_for
from pair.clinical.csvimport import import_csv
from pair.core.errors import Invalid

clinical_app = typer.Typer(help="Clinical data per case (MIDRC-style data dictionary).")


@clinical_app.command("import")
@handle_errors
def clinical_import(
    file: Annotated[Path, typer.Argument(help="CSV keyed by patient_id or accession_number.")],
    data_dir: DataDir,
    facility: Annotated[
        str | None,
        typer.Option(help="Facility name or id; without it a 'site' column names each row's."),
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid", help="Import valid rows; write the others to a rejects CSV."
        ),
    ] = False,
    rejects: Annotated[
        Path | None, typer.Option(help="Rejects CSV path (default FILE.rejects.csv).")
    ] = None,
) -> None:
    """Import clinical data; a file with any bad row imports nothing unless --skip-invalid."""
    if not file.is_file():
        raise Invalid(f"No such file: {file}")
    node = node_for(data_dir)
    with node.db.session() as s:
        fac = accounts.get_facility(s, facility) if facility is not None else None
        where = fac.name if fac else "this node"
        rejects_path = (rejects or file.with_suffix(".rejects.csv")) if skip_invalid else None
        result = import_csv(
            s,
            fac,
            file,
            Actor.system("cli", fac.id if fac else None),
            skip_invalid=skip_invalid,
            rejects_path=rejects_path,
        )
    for error in result.errors:
        err_console.print(str(error), highlight=False, markup=False)
    if not result.committed:
        err_console.print(
            f"{result.rejected} of {result.rows} rows invalid: nothing imported "
            "(fix them, or use --skip-invalid).",
            highlight=False,
        )
        raise typer.Exit(2)
    console.print(
        f"imported {result.imported} of {result.rows} rows into {where}"
        + (f"; {result.skipped} of other facilities skipped" if result.skipped else "")
        + (f"; {result.rejected} rejected, see {result.rejects_path}" if result.rejected else ""),
        highlight=False,
    )
