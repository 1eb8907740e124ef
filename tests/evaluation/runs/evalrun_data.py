"""The 48 vendored chest radiographs wrapped as DICOM and ingested into a node, plus clinical data.

The set is biased by site and age (see tests/data/README.md): it exercises the pipeline, it does
not judge a model.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pair.accounts import service as accounts
from pair.algorithms import DEMO_PACKAGE
from pair.algorithms import service as algorithms
from pair.algorithms.wrap import png_to_dicom
from pair.audit.service import Actor
from pair.clinical.csvimport import import_csv
from pair.core.node import Node
from pair.repository.ingest import Payload, ingest_batch

DEMO_DIR = DEMO_PACKAGE


@dataclass
class NodeData:
    facility_id: int
    evaluator_token: str
    radiologist_token: str
    labels: dict[str, int]  # original patient key -> label
    n_images: int


def ingest_shared_images(
    node: Node, shared_data: Path, tmp_path: Path, password: str | None = None
) -> NodeData:
    rows = list(csv.DictReader((shared_data / "labels.csv").open(encoding="utf-8")))
    with node.db.session() as s:
        f = accounts.create_facility(s, "General Hospital")
        ev = accounts.create_user(s, f, "eva", "evaluator", password)
        rad = accounts.create_user(s, f, "rad", "radiologist", password)
        tokens = accounts.create_token(s, ev, "t")[1], accounts.create_token(s, rad, "t")[1]
        facility_id = f.id
    payloads = []
    for i, row in enumerate(rows):
        modality = "DX" if row["modality"] == "DX" else "CR"
        ds = png_to_dicom(
            shared_data / row["file"],
            modality=modality,
            patient_id=row["patient_key"],
            patient_name=f"TEST^{i}",
            patient_sex=row["sex"],
            study_date=f"2020{1 + i % 12:02d}15",
        )
        out = tmp_path / "dicom" / f"{i}.dcm"
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
        payloads.append(Payload(data=out.read_bytes(), label=out.name))
    actor = Actor.system("test", facility_id)
    results = ingest_batch(node, facility_id, payloads, "test", actor)
    assert all(r.accepted for r in results), [r for r in results if not r.accepted]
    labels = {row["patient_key"]: int(row["label"] == "covid") for row in rows}
    clinical = tmp_path / "clinical.csv"
    with clinical.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "covid19_positive", "sex"])
        for key, y in labels.items():
            sex = next(r["sex"] for r in rows if r["patient_key"] == key)
            w.writerow([key, "Yes" if y else "No", {"M": "Male", "F": "Female"}.get(sex, "")])
    with node.db.session() as s:
        from pair.accounts.models import Facility

        res = import_csv(s, s.get(Facility, facility_id), clinical, actor)
        assert res.committed and res.imported == len(labels), res.errors
    return NodeData(facility_id, tokens[0], tokens[1], labels, len(rows))


def label_csv(data: NodeData, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "label"])
        for key, y in data.labels.items():
            w.writerow([key, "positive" if y else "negative"])
    return path


def demo_setup(
    node: Node, shared_data: Path, tmp_path: Path, password: str | None = None
) -> tuple[NodeData, Actor]:
    """The shared radiographs ingested for one facility, an evaluator actor and the demo
    algorithm registered: the start of most evaluation-run tests."""
    data = ingest_shared_images(node, shared_data, tmp_path, password)
    actor = Actor(None, "eva", data.facility_id, "evaluator", "test")
    with node.db.session() as s:
        algorithms.add_algorithm(s, node, DEMO_DIR, actor)
    return data, actor


def create_demo_run(node: Node, actor: Actor, n_boot: int) -> int:
    """A queued run of the demo algorithm on the whole cohort against RT-PCR."""
    from pair.evaluation.runs import service

    with node.db.session() as s:
        return service.create_run(
            s,
            actor,
            algorithm="demo-cxr-opacity",
            cohort="",
            truth="rt-pcr",
            options={"n_boot": n_boot},
        ).id
