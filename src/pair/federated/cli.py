"""``pair fl``: federated studies (validate, synthetic sites, simulate, import, export).

Deployment commands (provision, POC, run against a FLARE deployment) are added by
``pair.federated.cli_deploy.register(fl_app)`` when that module is present (see the end).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pair.audit.service import Actor
from pair.cli.common import DataDir, console, handle_errors, node_for
from pair.core.errors import Invalid
from pair.federated.study import Study, load_study

fl_app = typer.Typer(help="Federated learning on NVIDIA FLARE: studies, simulator, metrics.")

StudyArg = Annotated[Path, typer.Argument(help="Study YAML file.", exists=False)]


def _site_folders(study: Study, folders: list[Path]) -> dict[str, Path]:
    """Site name → folder: the name in ``site.json``, else the folder name."""
    out: dict[str, Path] = {}
    for folder in folders:
        info = folder / "site.json"
        name = folder.name
        if info.is_file():
            name = str(json.loads(info.read_text(encoding="utf-8")).get("site", name))
        if name in out:
            raise Invalid(f"two folders for site {name!r}: {out[name]} and {folder}")
        if not (folder / "site.npz").is_file():
            raise Invalid(f"{folder}: no site.npz (prepare the site data first)")
        out[name] = folder
    return out


def _pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise Invalid(f"--facility {v!r}: use SITE=FACILITY")
        site, facility = v.split("=", 1)
        out[site.strip()] = facility.strip()
    return out


@fl_app.command("validate")
@handle_errors
def validate(study: StudyArg) -> None:
    """Check a study file; prints its digest."""
    s = load_study(study)
    console.print(f"study {s.id} v{s.version} is valid; sha256 {s.digest()}")


@fl_app.command("synth-sites")
@handle_errors
def synth_sites(
    out: Annotated[Path, typer.Argument(help="Folder for site-1, site-2, ...")],
    sites: Annotated[int, typer.Option(min=1, max=9)] = 3,
    cases: Annotated[int, typer.Option(min=8, help="Cases per site.")] = 60,
    size: Annotated[int, typer.Option(min=16, max=512)] = 64,
    seed: int = 0,
) -> None:
    """Synthetic multi-site radiograph data (``pair synth`` phantoms, site differences)."""
    from pair.federated.core.synthetic import write_synthetic_sites

    for name, folder in write_synthetic_sites(out, sites, cases, size, seed).items():
        console.print(f"{name}: {folder}")


def _progress_printer(study: Study, progress: Progress, task: Any) -> Any:
    def on_record(rec: dict[str, Any]) -> None:
        if rec.get("kind") == "site":
            m = rec.get("metrics", {})
            auc = m.get("val_auc")
            progress.console.print(
                f"round {rec['round']} {rec['site']}: train loss {m.get('train_loss', 0):.4f}"
                + (f", val AUC {auc:.3f}" if auc is not None else "")
            )
            progress.advance(task)
        elif rec.get("kind") == "round":
            progress.console.print(
                f"round {rec['round']} aggregated ({', '.join(rec.get('sites', []))}) "
                f"in {rec.get('wall_s', 0):.1f} s"
            )

    return on_record


@fl_app.command("simulate")
@handle_errors
def simulate_cmd(
    study: StudyArg,
    sites: Annotated[list[Path], typer.Option("--sites", help="Site data folders (one per site).")],
    workspace: Annotated[Path | None, typer.Option(help="FLARE workspace (default: temp).")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", "-d", envvar="PAIR_DATA_DIR", help="Hub data dir: store metrics."
        ),
    ] = None,
    run_name: str = "default",
    facility: Annotated[list[str] | None, typer.Option(help="SITE=FACILITY mapping.")] = None,
    cross_site: Annotated[bool, typer.Option(help="Cross-site evaluation at the end.")] = True,
    register: Annotated[bool, typer.Option(help="Export and register the global model.")] = False,
) -> None:
    """Run STUDY in FLARE's simulator, one simulated client per site folder."""
    from pair.federated.flare.simulate import simulate

    s = load_study(study)
    folders = _site_folders(s, sites)
    if register and data_dir is None:
        raise Invalid("--register needs --data-dir (the hub node that registers the model)")
    own_ws = workspace is None
    ws = workspace or Path(tempfile.mkdtemp(prefix="pair-fl-"))
    try:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"{s.id}", total=s.training.rounds * len(s.site_names))
            result = simulate(s, folders, ws, progress=_progress_printer(s, progress, task))
        console.print(f"simulation finished; workspace {result.workspace}")
        if data_dir is not None:
            _store(s, result, data_dir, run_name, _pairs(facility or []), register)
        else:
            console.print(f"metrics: {result.metrics_path}")
    finally:
        if own_ws and data_dir is not None:
            shutil.rmtree(ws, ignore_errors=True)


def _store(
    s: Study, result: Any, data_dir: Path, run_name: str, facilities: dict[str, str], register: bool
) -> None:
    from pair.federated import service

    node = node_for(data_dir)
    with node.db.session() as session:
        row = service.record_run(
            session,
            s,
            result.metrics_path,
            cross_site_path=result.cross_site_path,
            mode="simulator",
            run_name=run_name,
            site_facilities=facilities,
        )
        console.print(
            f"stored federated study run {row.id} ({row.rounds_done} rounds, {row.status})"
        )
        if register:
            if result.global_model_path is None:
                raise Invalid("the run left no global model to register")
            with tempfile.TemporaryDirectory(dir=node.settings.tmp_dir) as tmp:
                algo, version = service.register_global_model(
                    session, node, row, s, result.global_model_path, Path(tmp), Actor.system("cli")
                )
            console.print(f"registered algorithm {algo} {version}")


@fl_app.command("prepare-site")
@handle_errors
def prepare_site_cmd(
    study: StudyArg,
    site: Annotated[str, typer.Option(help="This site's name in the study.")],
    out: Annotated[Path, typer.Option(help="Folder for site.npz / site.json (stays here).")],
    data_dir: DataDir,
    facility: Annotated[str | None, typer.Option(help="Facility name, code or id.")] = None,
) -> None:
    """Prepare this site's training data from its node (cohort query, labels, preprocessing)."""
    from pair.accounts import service as accounts
    from pair.federated.site_data import prepare_site

    s = load_study(study)
    node = node_for(data_dir)
    with node.db.session() as session:
        if facility is None:
            raise Invalid("name this site's facility with --facility")
        facility_id = accounts.get_facility(session, facility).id
        data = prepare_site(session, node.settings.storage_dir, facility_id, s, site, out)
    console.print(f"{site}: {len(data)} cases ({data.positives} positive) written to {out}")


@fl_app.command("import")
@handle_errors
def import_cmd(
    study: StudyArg,
    metrics: Annotated[Path, typer.Argument(help="pair_metrics.jsonl from the FLARE server.")],
    data_dir: DataDir,
    cross_site: Annotated[Path | None, typer.Option(help="cross_val_results.json")] = None,
    run_name: str = "default",
    mode: str = "deployment",
    facility: Annotated[list[str] | None, typer.Option(help="SITE=FACILITY mapping.")] = None,
) -> None:
    """Store a run's metrics (from a FLARE deployment) at the hub."""
    from pair.federated import service

    s = load_study(study)
    node = node_for(data_dir)
    with node.db.session() as session:
        row = service.record_run(
            session,
            s,
            metrics,
            cross_site_path=cross_site,
            mode=mode,
            run_name=run_name,
            site_facilities=_pairs(facility or []),
        )
        console.print(
            f"stored federated study run {row.id} ({row.rounds_done} rounds, {row.status})"
        )


@fl_app.command("export")
@handle_errors
def export_cmd(
    study: StudyArg,
    model: Annotated[Path, typer.Option(help="Global model (FL_global_model.pt).")],
    out: Annotated[Path, typer.Option(help="Package folder to write.")],
    version: str = "1.0.0",
) -> None:
    """Write the algorithm package (ONNX + pair-algorithm.yaml) of a global model."""
    from pair.federated.export import load_global_model, write_package

    s = load_study(study)
    if out.exists() and any(out.iterdir()):
        raise Invalid(f"{out} exists and is not empty")
    provenance = {"study": f"{s.id} v{s.version}", "sites": ", ".join(s.site_names)}
    write_package(s, load_global_model(model), out, provenance, version)
    console.print(f"wrote {out}")


def _register_deployment_commands() -> None:
    """Hook: deployment commands live in ``cli_deploy.register(fl_app)`` (separate owner)."""
    if importlib.util.find_spec("pair.federated.cli_deploy") is not None:
        importlib.import_module("pair.federated.cli_deploy").register(fl_app)


_register_deployment_commands()
