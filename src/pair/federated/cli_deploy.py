"""``pair fl provision|site-policies|run|status|poc``: FLARE deployment and joining.

Registered on the ``pair fl`` app by ``register(fl_app)``. Provisioning reads the hub's member
sites from its database; ``run`` and ``status`` talk to a running FLARE server with a lead's
admin kit through the FLARE API; ``poc`` runs a whole consortium on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pair.cli.common import DataDir, console, handle_errors, node_for
from pair.core.errors import Invalid
from pair.federated.flare import deploy, provision
from pair.federated.flare.poc import running_consortium

AdminKit = Annotated[
    Path, typer.Option("--admin-kit", help="A lead's FLARE admin startup kit folder.")
]


@handle_errors
def provision_cmd(
    data_dir: DataDir,
    out: Annotated[
        Path, typer.Option(help="Provisioning workspace (kits go to OUT/PROJECT/prod_NN).")
    ],
    server_host: Annotated[str, typer.Option(help="The hub's DNS name, as sites will reach it.")],
    lead: Annotated[list[str], typer.Option(help="E-mail of a study lead (may submit); repeat.")],
    operator: Annotated[
        list[str] | None, typer.Option(help="E-mail of a hub operator (project admin).")
    ] = None,
    project: Annotated[str, typer.Option(help="FLARE project name.")] = "pair",
    fed_port: Annotated[int, typer.Option(help="Port sites connect to.")] = 8002,
    admin_port: Annotated[int, typer.Option(help="Port admin kits connect to.")] = 8003,
    site_policies: Annotated[
        bool,
        typer.Option(help="Write PAIR's authorization/privacy/allow-list policies into the kits."),
    ] = True,
) -> None:
    """Provision the consortium: one kit per member site (facility with an active site-node
    account), the server and the admins; print the root CA fingerprint to share out of band."""
    node = node_for(data_dir)
    with node.db.session() as session:
        sites = provision.member_sites(session)
    admins = [provision.AdminParticipant(e, "pair_hub", "lead") for e in lead]
    admins += [provision.AdminParticipant(e, "pair_hub", "project_admin") for e in operator or []]
    consortium = provision.Consortium(
        project=project,
        server_host=server_host,
        sites=sites,
        admins=admins,
        fed_learn_port=fed_port,
        admin_port=admin_port,
    )
    kits = provision.provision(consortium, out, site_policies=site_policies)
    console.print(f"server kit: {kits.server}")
    for name, kit in sorted(kits.sites.items()):
        console.print(f"site kit:   {kit}  ({name})")
    for name, kit in sorted(kits.admins.items()):
        console.print(f"admin kit:  {kit}  ({name})")
    console.print(f"root CA fingerprint: {kits.root_ca_fingerprint}")


@handle_errors
def site_policies_cmd(
    kit: Annotated[
        Path, typer.Argument(help="A site's (or the server's) FLARE startup kit folder.")
    ],
) -> None:
    """Write PAIR's local/authorization.json, privacy.json and resources.json into a kit."""
    for path in provision.install_site_policies(kit):
        console.print(f"wrote {path}")


SiteData = Annotated[
    list[str] | None,
    typer.Option(
        "--site-data",
        help="SITE=DIR: data folder the site's script reads (else its PAIR_FL_SITE_DATA).",
    ),
]


def _site_data(values: list[str] | None) -> dict[str, str]:
    out = {}
    for value in values or []:
        site, sep, folder = value.partition("=")
        if not sep or not site.strip() or not folder.strip():
            raise Invalid(f"--site-data {value!r}: use SITE=DIR")
        out[site.strip()] = str(Path(folder.strip()).resolve())
    return out


def _job_folder(
    source: Path, dest: Path, resume_from: Path | None, site_data: dict[str, str] | None = None
) -> Path:
    """An exported job folder as is, or the job PAIR builds from a study YAML."""
    if source.is_dir():
        if resume_from:
            raise Invalid("--resume-from needs a study file, not an exported job folder")
        if not (source / "meta.json").is_file():
            raise Invalid(f"{source} is not a FLARE job folder (no meta.json)")
        return source
    if not source.is_file():
        raise Invalid(f"{source}: no such study file or job folder")
    study_mod = importlib.import_module("pair.federated.study")
    recipe_mod = importlib.import_module("pair.federated.flare.recipe")
    study = study_mod.load_study(source)
    ckpt = str(resume_from.resolve()) if resume_from else None
    recipe = recipe_mod.build_recipe(study, initial_ckpt=ckpt, site_data=site_data or None)
    return deploy.export_job(recipe, dest, min_sites=study.training.min_sites)


def _progress(progress: Progress, task: Any) -> Any:
    def on_poll(meta: dict[str, Any]) -> None:
        progress.update(task, description=f"job {meta.get('job_id', '')[:8]} {meta.get('status')}")

    return on_poll


@handle_errors
def run_cmd(
    study: Annotated[Path, typer.Argument(help="Study YAML, or an exported FLARE job folder.")],
    admin_kit: AdminKit,
    result_dir: Annotated[Path, typer.Option(help="Where the job result is downloaded.")] = Path(
        "fl-results"
    ),
    timeout: Annotated[float, typer.Option(help="Seconds before the job is aborted.")] = 3600.0,
    resume_from: Annotated[
        Path | None, typer.Option(help="Global model (FL_global_model.pt) to start from.")
    ] = None,
    site_data: SiteData = None,
) -> None:
    """Submit a study to a real FLARE deployment, follow it, download its result."""
    deploy.check_admin_kit(admin_kit)
    with tempfile.TemporaryDirectory(prefix="pair-fl-job-") as tmp:
        job = _job_folder(study, Path(tmp), resume_from, _site_data(site_data))
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("submitting", total=None)
            outcome = deploy.run_job(
                admin_kit, job, result_dir, timeout_s=timeout, on_poll=_progress(progress, task)
            )
    console.print(f"job {outcome.job_id}: {outcome.status}")
    if outcome.result_dir:
        console.print(f"result: {outcome.result_dir}")
        with contextlib.suppress(deploy.DeploymentError):
            console.print(f"global model: {deploy.last_global_model(outcome.result_dir)}")
    if not outcome.completed:
        raise typer.Exit(1)


@handle_errors
def status_cmd(
    admin_kit: AdminKit,
    job_id: Annotated[
        str | None, typer.Argument(help="A job id; without it: connected sites.")
    ] = None,
) -> None:
    """Connected sites, or one job's status (FLARE job meta)."""
    with deploy.admin_session(admin_kit) as admin:
        if job_id:
            meta = admin.status(job_id)
            shown = {
                k: meta.get(k) for k in ("job_id", "name", "status", "submit_time_iso", "min_sites")
            }
            console.print_json(json.dumps(shown, default=str))
        else:
            console.print("connected sites: " + (", ".join(admin.connected_sites()) or "none"))


@handle_errors
def poc_cmd(
    workdir: Annotated[Path, typer.Option(help="Folder for the kits and workspaces.")],
    site: Annotated[list[str], typer.Option(help="Site name; repeat (default site-1..3).")] = [],  # noqa: B006
    job: Annotated[
        Path | None, typer.Option(help="Study YAML or job folder to run, then stop.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds before the job is aborted.")] = 1800.0,
    site_data: SiteData = None,
) -> None:
    """A whole consortium on 127.0.0.1 (server + sites as separate processes); with --job run it
    and stop, otherwise keep running until Ctrl-C. Every process started is stopped at exit."""
    sites = site or ["site-1", "site-2", "site-3"]
    started = time.monotonic()
    with running_consortium(workdir, sites) as consortium:
        console.print(
            f"ready in {time.monotonic() - started:.1f} s; pids {consortium.processes.pids()}"
        )
        console.print(f"lead admin kit: {consortium.lead_kit}")
        if job is None:
            try:
                while True:
                    time.sleep(2)
                    consortium.processes.check_alive()
            except KeyboardInterrupt:
                console.print("stopping")
            return
        with tempfile.TemporaryDirectory(prefix="pair-fl-job-") as tmp:
            folder = _job_folder(job, Path(tmp), None, _site_data(site_data))
            outcome = deploy.run_job(
                consortium.lead_kit,
                folder,
                workdir / "results",
                timeout_s=timeout,
                on_poll=lambda m: console.print(
                    f"{time.monotonic() - started:6.1f} s  {m.get('status')}"
                ),
                check=consortium.processes.check_alive,
            )
        console.print(f"job {outcome.job_id}: {outcome.status}; result {outcome.result_dir}")
    if not outcome.completed:
        raise typer.Exit(1)


def register(fl_app: typer.Typer) -> None:
    """Add the deployment commands to ``pair fl``."""
    fl_app.command("provision")(provision_cmd)
    fl_app.command("site-policies")(site_policies_cmd)
    fl_app.command("run")(run_cmd)
    fl_app.command("status")(status_cmd)
    fl_app.command("poc")(poc_cmd)
