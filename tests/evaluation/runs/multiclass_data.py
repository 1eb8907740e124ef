"""A tiny 4-class ONNX model (RSNA chest radiograph categories) and report/label fixtures.

The model is a fixed random linear map of the 32x32 image to 4 logits (softmax by the
runner): it has no skill; it exercises the multiclass pipeline with varied predictions.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import select

from pair.audit.service import Actor
from pair.core.node import Node
from tests.algorithms.algo_builders import _finish, manifest, write_package

CLASSES = [
    {"name": "negative", "label": "Negative for pneumonia"},
    {"name": "atypical", "label": "Atypical appearance"},
    {"name": "indeterminate", "label": "Indeterminate appearance"},
    {"name": "typical", "label": "Typical appearance"},
]
NAMES = [c["name"] for c in CLASSES]
ALGO_ID = "test-cxr-category"

# rsna-cxr-covid inputs that give each category
REPORT_INPUTS: dict[str, dict[str, Any]] = {
    "negative": {"opacities": "absent"},
    "typical": {"opacities": "present", "distribution": ["multifocal_bilateral_peripheral"]},
    "indeterminate": {"opacities": "present", "distribution": ["central"]},
    "atypical": {"opacities": "present", "atypical_features": ["edema"]},
}


def category_model(seed: int = 7, n_classes: int = 4) -> bytes:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.08, size=(32 * 32, n_classes)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "category",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_classes])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    return _finish(graph)


def category_package(
    folder: Path,
    classes: list[dict[str, str]] | None = None,
    algo_id: str = ALGO_ID,
    seed: int = 7,
) -> Path:
    classes = classes or CLASSES
    m = manifest(
        **{
            "id": algo_id,
            "name": "Test CXR category model",
            "output": {
                "kind": "multiclass",
                "tensor_name": "logits",
                "values": "logits",
                "ordinal": True,
                "classes": classes,
            },
            "input.normalization": {"kind": "range", "min": -1.0, "max": 1.0},
        }
    )
    return write_package(folder, m, category_model(seed, n_classes=len(classes)))


def write_reports(node: Node, facility_id: int, skip: int = 1) -> dict[str, str]:
    """Sign an rsna-cxr-covid report on every study but the first ``skip``; categories rotate
    through the four classes. Returns study UID -> category."""
    from pair.reporting import service as reports
    from pair.repository.models import Study

    rad = Actor(None, "rad", facility_id, "radiologist", "test")
    order = ["negative", "typical", "indeterminate", "atypical"]
    out: dict[str, str] = {}
    with node.db.session() as s:
        uids = s.scalars(select(Study.study_uid).order_by(Study.id)).all()
        for i, uid in enumerate(uids[skip:]):
            category = order[i % 4]
            report = reports.create_draft(s, rad, uid, "rsna-cxr-covid", REPORT_INPUTS[category])
            reports.sign(s, rad, report.id)
            out[uid] = category
    return out


def study_label_csv(categories: dict[str, str], path: Path, use_labels: bool = True) -> Path:
    """Label CSV keyed by study UID; every other row uses the class label instead of its name."""
    labels = {c["name"]: c["label"] for c in CLASSES}
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["study_uid", "label"])
        for i, (uid, cat) in enumerate(categories.items()):
            w.writerow([uid, labels[cat].upper() if use_labels and i % 2 else cat])
    return path
