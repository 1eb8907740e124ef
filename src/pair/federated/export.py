"""Closed loop: the final global model as an algorithm package (ONNX + ``pair-algorithm.yaml``)
that every site's local evaluation accepts like any third-party algorithm.

The package's input section is the exact preparation the sites trained on
(``core.data.study_input_spec``), so a site evaluating it on its DICOM cases feeds the model
what it learned from; a 2.5D CT study's package has the slab input (``input.slab``), one
inference per slice of a series, combined by max. Provenance (study, version, digest, sites,
rounds, data counts, engine, model hash) goes into the manifest description and the model card.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from pair.algorithms.manifest import Manifest
from pair.core.errors import Invalid
from pair.federated.core.data import study_input_spec
from pair.federated.core.site import build_model
from pair.federated.core.train import set_state
from pair.federated.study import Study

MODALITIES = {"CXR": ["CR", "DX"], "CT": ["CT"]}


def load_global_model(path: Path) -> dict[str, Any]:
    """State dict of FLARE's persisted global model (``FL_global_model.pt``) or a plain one."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise Invalid(f"{path}: not a readable PyTorch model ({exc}).") from None
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise Invalid(f"{path}: expected a state dict.")
    return data


def onnx_bytes(study: Study, state: dict[str, Any]) -> bytes:
    model = build_model(study)
    set_state(model, state)
    model.eval()
    size = study.input.size
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.onnx"
        _export(model, study.input.slices, size, target)
        return target.read_bytes()


def _export(model: torch.nn.Module, channels: int, size: int, target: Path) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(1, channels, size, size),),
        target,
        input_names=["image"],
        output_names=["logit"],
        dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def manifest_for(
    study: Study,
    model_sha256: str,
    provenance: dict[str, Any],
    version: str,
    threshold: float = 0.5,
) -> dict[str, Any]:
    spec = study_input_spec(study.input.size, study.input.slices).model_dump(
        mode="json", exclude_none=True
    )
    spec["aggregation"] = "max"
    sites = ", ".join(
        f"{s} ({provenance.get('cases', {}).get(s, '?')} cases)" for s in study.site_names
    )
    label = study.labels
    manifest = {
        "format_version": 1,
        "id": f"fl-{study.id}"[:64],
        "name": f"Federated model: {study.title or study.id}"[:200],
        "version": version,
        "vendor": "PAIR consortium (federated study)",
        "licence": "Apache-2.0",
        "description": (
            f"Global model of federated study {study.id} v{study.version} "
            f"(definition sha256 {study.digest()}), strategy {study.strategy.name}, "
            f"{provenance.get('rounds', study.training.rounds)} rounds on NVIDIA FLARE "
            f"({provenance.get('engine', 'nvflare')}) across sites: {sites}. "
            f"Global model sha256 {model_sha256}."
        ),
        "intended_use": (
            f"Research evaluation of the {study.use_case} task at consortium sites; label "
            f"{label.source}:{label.field} (positive = {', '.join(label.positive)}). "
            "Not a medical device."
        ),
        "use_case_id": study.use_case,
        "modality": MODALITIES[study.input.modality],
        "body_part": "CHEST",
        "model": {"file": "model.onnx", "sha256": model_sha256},
        "input": spec,
        "output": {
            "kind": "binary",
            "tensor_name": "logit",
            "values": "logits",
            "classes": [
                {"name": "negative", "label": f"{label.field}: {'/'.join(label.negative)}"},
                {"name": "positive", "label": f"{label.field}: {'/'.join(label.positive)}"},
            ],
            "positive_class": "positive",
            "recommended_threshold": round(float(threshold), 6),
        },
    }
    Manifest.model_validate(manifest)  # our own output must satisfy the published schema
    return manifest


def write_package(
    study: Study,
    state: dict[str, Any],
    out: Path,
    provenance: dict[str, Any],
    version: str = "1.0.0",
    threshold: float = 0.5,
) -> Path:
    """Write ``out/`` with model.onnx, pair-algorithm.yaml and README.md; returns ``out``."""
    model = onnx_bytes(study, state)
    digest = hashlib.sha256(model).hexdigest()
    manifest = manifest_for(study, digest, provenance, version, threshold)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(model)
    (out / "pair-algorithm.yaml").write_text(
        yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    card = [
        f"# {manifest['name']}",
        "",
        "Trained by federated learning: no image left any site; only model weights and",
        "aggregate metrics were exchanged.",
        "",
        "## Provenance",
        "",
        *[f"- {k}: {v}" for k, v in sorted(provenance.items())],
        f"- study definition sha256: {study.digest()}",
        f"- ONNX sha256: {digest}",
    ]
    (out / "README.md").write_text("\n".join(card) + "\n", encoding="utf-8")
    return out
