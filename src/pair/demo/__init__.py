"""``make demo``: a hub and three site nodes (``pair.demo.consortium``); ``--single`` loads
the synthetic multi-site data into one node and serves it (what the tests prepare).

Idempotent: a data dir that was already prepared is served as it is.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.clinical.csvimport import import_csv
from pair.core.node import Node, open_node
from pair.repository.service import import_paths
from pair.synth.config import site_archetype
from pair.synth.generator import generate

console = Console()
DEMO_PASSWORD = "pair-demo-2026"
DEMO_SITES = 3
DEMO_PATIENTS = 6
DEMO_SEED = 2020
DEMO_ALGORITHM = "demo-synth-cxr"
DEMO_USERS = [
    ("admin", "admin"),
    ("radiologist", "radiologist"),
    ("datamanager", "data-manager"),
    ("evaluator", "evaluator"),
    ("researcher", "researcher"),
]


def prepare(data_dir: Path, *, sites: int = DEMO_SITES, patients: int = DEMO_PATIENTS) -> Node:
    """Generate synthetic data, create facilities, users and AE titles, and import everything."""
    node = open_node(data_dir)
    marker = data_dir / ".demo-ready"
    if marker.exists():
        register_demo_algorithm(node)
        return node
    synth_dir = data_dir / "synthetic-input"
    console.print(
        f"generating synthetic data: {sites} sites x {patients} patients (seed {DEMO_SEED}) ..."
    )
    summary = generate(synth_dir, sites, patients, seed=DEMO_SEED, ct_slices=32)
    console.print(f"  {summary.studies} studies, {summary.instances} instances")
    facility_ids: list[int] = []
    with node.db.session() as s:
        for i in range(sites):
            arche = site_archetype(i)
            f = accounts.create_facility(s, arche.institution, f"SITE{i + 1:02d}")
            facility_ids.append(f.id)
            accounts.add_ae_title(s, f, f"MODALITY{i + 1:02d}", "demo scanner")
            prefix = "" if i == 0 else f"site{i + 1}-"
            for name, role in DEMO_USERS:
                accounts.create_user(s, f, prefix + name, role, DEMO_PASSWORD)
    for i, facility_id in enumerate(facility_ids):
        folder = synth_dir / f"site-{i + 1:02d}"
        console.print(f"importing {folder.name} (de-identified on the way in) ...")
        result = import_paths(node, facility_id, [folder], Actor.system("demo", facility_id))
        console.print(
            f"  stored {result.stored}, quarantined {result.quarantined}, "
            f"rejected {result.rejected}"
        )
    with node.db.session() as s:
        clinical = import_csv(
            s, None, synth_dir / "clinical.csv", Actor.system("demo"), skip_invalid=True
        )
    console.print(f"clinical data imported for {clinical.imported} of {clinical.rows} patients")
    if clinical.rejected:
        reasons = sorted({e.message for e in clinical.errors})
        console.print(f"  {clinical.rejected} row(s) not imported: {'; '.join(reasons)}")
        if any(e.rule == "known_case" for e in clinical.errors):
            console.print("  (a patient whose only image is in quarantine has no case yet)")
    register_demo_algorithm(node)
    evaluate_demo_algorithm(node, facility_ids[0])
    marker.write_text("ready\n")
    return node


def register_demo_algorithm(node: Node) -> None:
    """Register the DEMO package trained on ``pair synth`` radiographs (idempotent).

    Not ``demo-cxr-opacity``: that model learnt simpler drawings and saturates at 1.000 on every
    ``pair synth`` radiograph (a distribution shift), which made the demo's evaluation read
    AUC 1.0 with specificity 0 (issue 15)."""
    from pair.algorithms import DEMO_SYNTH_PACKAGE
    from pair.algorithms import service as algorithms

    with node.db.session() as s:
        row = algorithms.add_algorithm(s, node, DEMO_SYNTH_PACKAGE, Actor.system("demo"))
        console.print(f"demo algorithm {row.ref} registered (DEMO, not for clinical use)")


def evaluate_demo_algorithm(node: Node, facility_id: int) -> int:
    """One finished evaluation of the demo algorithm on the first site's radiographs against
    RT-PCR, so the evaluator sees a real result (with its wide intervals) on first sign-in."""
    from pair.evaluation.runs import service
    from pair.evaluation.runs.execute import execute_run

    actor = Actor(None, "evaluator", facility_id, "evaluator", "demo")
    with node.db.session() as s:
        run_id = service.create_run(
            s,
            actor,
            algorithm=DEMO_ALGORITHM,
            cohort="modality=CR,DX",
            truth="rt-pcr",
            options={"n_boot": 1000},
        ).id
    run = execute_run(node, run_id)
    auc = (run.result or {}).get("auc") or {}
    if auc:
        console.print(f"demo evaluation #{run_id} on {run.total} radiographs (login evaluator):")
        console.print(f"  AUC {auc['value']:.3f} (95% CI {auc['lower']:.3f}-{auc['upper']:.3f})")
        if auc["lower"] == auc["upper"]:
            console.print(
                f"  every positive image scored above every negative; {run.total} are too few"
            )
            console.print("  for the interval to show the real uncertainty (see the result page)")
    return run_id
