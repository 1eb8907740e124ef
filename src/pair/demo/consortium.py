"""``make demo``: a hub and three sites as separate processes on loopback.

Each site has its own data dir, database and synthetic cohort with its own character (scanner
mix, prevalence, image quality: ``pair.synth`` site archetypes), de-identifies it on import,
evaluates the demo algorithm locally and shares everything with the hub (policy "all"): the
instances over STOW-RS, clinical data, final reports and the signed evaluation feedback. The
hub's registry and AI performance dashboards fill in as the pushes arrive.

Preparation happens once (markers in each data dir); the hub's member credentials and the
sites' feedback keys are written at preparation, so a second ``make demo`` starts at once.
Ctrl-C stops every process this command started.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from sqlalchemy import func, select

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.clinical.csvimport import import_csv
from pair.core.node import open_node
from pair.demo import (
    DEMO_PASSWORD,
    DEMO_PATIENTS,
    DEMO_SEED,
    evaluate_demo_algorithm,
    register_demo_algorithm,
)
from pair.repository.service import import_paths
from pair.synth.config import site_archetype
from pair.synth.generator import generate

console = Console(width=120)
SITES = 3
HUB_FACILITY = ("National COVID-19 imaging hub", "HUB")
HUB_USERS = [("hub", "hub-operator"), ("analyst", "registry-analyst")]
SITE_USERS = [
    ("admin", "admin"),
    ("radiologist", "radiologist"),
    ("datamanager", "data-manager"),
    ("evaluator", "evaluator"),
]
PUSH_INTERVAL_S = "3"


@dataclass(frozen=True)
class SiteReport:
    index: int
    code: str
    name: str
    stored: int
    quarantined: int
    cases: int
    with_clinical: int
    evaluation: str
    generated: int = 0  # patients the generator made for the site (rows of clinical.csv)


def site_code(index: int) -> str:
    return f"SITE{index:02d}"


def _site_dir(root: Path, index: int) -> Path:
    return root / f"site-{index}"


def prepare_hub(root: Path, sites: int) -> dict[str, str]:
    """The hub node: staff accounts, one approved member per site (credential kept for the
    demo in ``hub/.demo-credentials.json``, mode 0600) and each site's feedback secret."""
    hub_dir = root / "hub"
    store = hub_dir / ".demo-credentials.json"
    if store.exists():
        tokens: dict[str, str] = json.loads(store.read_text(encoding="utf-8"))
        return tokens
    from pair.registry.performance import receive
    from pair.sharing import membership

    node = open_node(hub_dir)
    tokens = {}
    try:
        with node.db.session() as s:
            staff = accounts.create_facility(s, *HUB_FACILITY)
            for name, role in HUB_USERS:
                accounts.create_user(s, staff, name, role, DEMO_PASSWORD, allow_operator=True)
            system = Actor.system("demo")
            for i in range(1, sites + 1):
                code = site_code(i)
                membership.register(s, site_archetype(i - 1).institution, code, "demo")
                credential = membership.approve(s, system, code)
                tokens[code] = credential.token
                _, secret = receive.issue_secret(s, code)
                key = _site_dir(root, i) / "keys" / "feedback.key"
                key.parent.mkdir(parents=True, exist_ok=True)
                key.unlink(missing_ok=True)
                fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(secret + "\n")
    finally:
        node.close()
    fd = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(tokens, fh)
    return tokens


def prepare_site(root: Path, index: int, synth_dir: Path) -> SiteReport:
    """One site node with its own facility, cohort, evaluation and sharing policy "all"."""
    from pair.clinical.models import ClinicalRecord
    from pair.repository.models import Patient
    from pair.sharing import outbox

    site_dir = _site_dir(root, index)
    marker = site_dir / ".demo-report.json"
    if marker.exists():
        return SiteReport(**json.loads(marker.read_text(encoding="utf-8")))
    arche = site_archetype(index - 1)
    node = open_node(site_dir)
    try:
        with node.db.session() as s:
            facility = accounts.create_facility(s, arche.institution, site_code(index))
            facility_id = facility.id
            accounts.add_ae_title(s, facility, f"MODALITY{index:02d}", "demo scanner")
            for name, role in SITE_USERS:
                accounts.create_user(s, facility, name, role, DEMO_PASSWORD)
        system = Actor.system("demo", facility_id)
        result = import_paths(node, facility_id, [synth_dir / f"site-{index:02d}"], system)
        with node.db.session() as s:
            import_csv(s, None, synth_dir / "clinical.csv", system, skip_invalid=True)
        register_demo_algorithm(node)
        try:
            run_id = evaluate_demo_algorithm(node, facility_id)
            evaluation = f"evaluation #{run_id}"
        except Exception as exc:  # a tiny cohort may lack a class: the demo goes on
            evaluation = f"no evaluation ({exc})"
        with node.db.session() as s:
            outbox.set_policy(s, system, "all", facility_id)
            cases = s.scalar(select(func.count()).select_from(Patient)) or 0
            with_clinical = s.scalar(select(func.count()).select_from(ClinicalRecord)) or 0
    finally:
        node.close()
    report = SiteReport(
        index,
        site_code(index),
        arche.institution,
        result.stored,
        result.quarantined,
        cases,
        with_clinical,
        evaluation,
        generated_patients(synth_dir, index),
    )
    marker.write_text(json.dumps(report.__dict__), encoding="utf-8")
    return report


def generated_patients(synth_dir: Path, index: int) -> int:
    """How many patients ``pair synth`` made for site ``index`` (its rows of clinical.csv)."""
    with (synth_dir / "clinical.csv").open(encoding="utf-8", newline="") as f:
        return sum(1 for row in csv.DictReader(f) if row["site"] == f"site-{index:02d}")


def prepare(
    root: Path, *, sites: int = SITES, patients: int = DEMO_PATIENTS
) -> tuple[dict[str, str], list[SiteReport]]:
    synth_dir = root / "synthetic-input"
    if not (synth_dir / "clinical.csv").exists():
        console.print(f"generating synthetic data: {sites} sites x {patients} patients ...")
        generate(synth_dir, sites, patients, seed=DEMO_SEED, ct_slices=32)
    tokens = prepare_hub(root, sites)
    reports = []
    for i in range(1, sites + 1):
        console.print(f"preparing site {i} (import with de-identification, evaluation) ...")
        reports.append(prepare_site(root, i, synth_dir))
    return tokens, reports


@dataclass
class Process:
    name: str
    url: str
    popen: subprocess.Popen[bytes]


def launch(
    root: Path, tokens: dict[str, str], *, host: str, port: int, dicom_port: int
) -> list[Process]:
    """Start the hub, then the sites (each pushing to the hub); logs in ``DATA/logs``."""
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    hub_url = f"http://{host}:{port}"
    specs = [("hub", root / "hub", port, dicom_port, "PAIRHUB", {"PAIR_ROLE": "hub"})]
    for i in range(1, len(tokens) + 1):
        env = {
            "PAIR_ROLE": "site",
            "PAIR_HUB_URL": hub_url,
            "PAIR_HUB_TOKEN": tokens[site_code(i)],
            "PAIR_HUB_PUSH_INTERVAL_S": PUSH_INTERVAL_S,
            "PAIR_FEED_FOLLOW": "1",  # new cases of the other sites are pulled in, as they arrive
            "PAIR_SITE_ID": site_code(i),
        }
        specs.append(
            (f"site-{i}", _site_dir(root, i), port + i, dicom_port + i, f"PAIRSITE{i}", env)
        )
    started: list[Process] = []
    for name, data_dir, http_port, dcm_port, ae, env in specs:
        cmd = [
            sys.executable, "-m", "pair", "serve", "--data-dir", str(data_dir), "--host", host,
            "--port", str(http_port), "--dicom-port", str(dcm_port), "--ae-title", ae,
        ]  # fmt: skip
        log = (logs / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches this command only: it stops them in order
        )
        started.append(Process(name, f"http://{host}:{http_port}", popen))
        if name == "hub":
            wait_healthy(started[0], 90)
    for proc in started[1:]:
        wait_healthy(proc, 90)
    return started


def wait_healthy(proc: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see its log")
        try:
            if httpx.get(proc.url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{proc.name} did not answer on {proc.url} within {timeout_s:.0f} s")


def stop(processes: list[Process], grace_s: float = 20) -> None:
    """SIGTERM every process (sites first, then the hub), then SIGKILL what is left."""
    for proc in reversed(processes):
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in processes:
        try:
            proc.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(5)


def hub_counts(root: Path) -> dict[str, int]:
    """Studies held at the hub per member site (read-only look at the hub's database)."""
    from pair.accounts.models import Facility
    from pair.repository.models import Study

    node = open_node(root / "hub")
    try:
        with node.db.session() as s:
            rows = s.execute(
                select(Facility.code, func.count(Study.id))
                .join(Study, Study.facility_id == Facility.id)
                .group_by(Facility.code)
            ).all()
    finally:
        node.close()
    return {code: n for code, n in rows}


def own_study_counts(root: Path, sites: int) -> dict[str, int]:
    """Each site's own (shareable) studies: what the hub should hold for it, no more."""
    from pair.repository.models import Study

    out = {}
    for i in range(1, sites + 1):
        node = open_node(_site_dir(root, i))
        try:
            with node.db.session() as s:
                stmt = select(func.count()).select_from(Study).where(Study.shareable.is_(True))
                out[site_code(i)] = s.scalar(stmt) or 0
        finally:
            node.close()
    return out


def pulled_counts(root: Path, index: int) -> dict[str, int]:
    """Cases a site pulled from the hub's feed, per origin site."""
    from pair.sharing.feed.models import FeedOrigin

    node = open_node(_site_dir(root, index))
    try:
        with node.db.session() as s:
            rows = s.execute(
                select(FeedOrigin.origin_facility, func.count()).group_by(
                    FeedOrigin.origin_facility
                )
            ).all()
    finally:
        node.close()
    return {code: n for code, n in rows}


WELCOME_WIDTH = 80  # every line of the welcome fits an 80-column terminal: nothing wraps


def welcome_lines(processes: list[Process], reports: list[SiteReport]) -> list[str]:
    """What ``make demo`` prints once every node answers: URLs, every login, where to look."""
    hub = processes[0]
    hub_logins = ", ".join(f"{name} ({role})" for name, role in HUB_USERS)
    lines = [
        "PAIR consortium demo: a hub and three sites on this machine",
        f"Password for every login below: {DEMO_PASSWORD}",
        "",
        f"hub     {hub.url}",
        f"  logins: {hub_logins}",
        "  pages:  /registry  /registry/performance  /hub/members",
    ]
    site_logins = ", ".join(f"{name} ({role})" for name, role in SITE_USERS)
    for proc, rep in zip(processes[1:], reports, strict=True):
        lines += ["", f"{proc.name:<7} {proc.url}  {rep.name}", f"  logins: {site_logins}"]
        lines.append(f"  {rep.stored} instances stored; {rep.evaluation} (login evaluator)")
        if rep.quarantined:
            lines.append(
                f"  {rep.quarantined} instance(s) in quarantine on purpose (residual PHI planted "
                f"by the generator): sign in as admin, open {proc.url}/admin/quarantine"
            )
        if rep.generated > rep.cases:
            lines.append(
                f"  {rep.cases} of {rep.generated} generated patients are listed: the only image"
                f" of the other {rep.generated - rep.cases} is held in quarantine, so the site has"
                " no case to attach its clinical data to"
            )
        if rep.with_clinical < rep.cases:
            lines.append(f"  clinical data for {rep.with_clinical} of {rep.cases} listed patients")
    lines += [
        "",
        "Sites push their cases to the hub every few seconds (/sharing at a site) and",
        "pull the other sites' new cases from the hub's feed. Ctrl-C stops everything.",
    ]
    wrapped: list[str] = []
    for line in lines:  # long notes are broken here, indented, rather than by the terminal
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        wrapped += textwrap.wrap(line, WELCOME_WIDTH, subsequent_indent=indent) or [""]
    return wrapped


def print_welcome(processes: list[Process], reports: list[SiteReport]) -> None:
    console.print("\n".join(welcome_lines(processes, reports)), markup=False, highlight=False)


def run(root: Path, *, host: str, port: int, dicom_port: int, sites: int = SITES) -> None:
    tokens, reports = prepare(root, sites=sites)
    processes = launch(root, tokens, host=host, port=port, dicom_port=dicom_port)
    try:
        print_welcome(processes, reports)
        shown: dict[str, int] = {}
        while all(p.popen.poll() is None for p in processes):
            time.sleep(5)
            counts = hub_counts(root)
            if counts != shown:
                shown = counts
                listing = ", ".join(f"{code} {n}" for code, n in sorted(counts.items()))
                console.print(f"hub holds studies: {listing}")
        dead = [p.name for p in processes if p.popen.poll() is not None]
        console.print(f"[red]{', '.join(dead)} stopped; see {root / 'logs'}[/red]")
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        stop(processes)
