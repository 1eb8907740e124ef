"""2.5D (slab) packages and CT series for the algorithm and federated tests (real ONNX, DICOM)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from onnx import TensorProto, helper, numpy_helper
from pydicom.uid import generate_uid

from tests.algorithms.algo_builders import BASE_MANIFEST, OPSET
from tests.factories import ct_instance

SLAB_WEIGHTS = (0.1, 0.3, 0.6)  # a channel-order-sensitive model: slab order shows in the output


def slab_manifest(slices: int = 3, step: int = 1, **input_changes: Any) -> dict[str, Any]:
    m = copy.deepcopy(BASE_MANIFEST)
    m["id"] = "test-ct-slab"
    m["modality"] = ["CT"]
    m["input"].update(
        {
            "channels": slices,
            "scaling": {"kind": "window", "center": -300.0, "width": 1400.0},
            "slab": {"slices": slices, "step": step},
            **input_changes,
        }
    )
    return m


def weighted_mean_model(weights: tuple[float, ...] = SLAB_WEIGHTS, size: int = 32) -> bytes:
    """``prob = Σ_c w_c · mean(x_c)``: ``[N, C, H, W] → [N, 1]`` (weights sum to 1)."""
    w = np.asarray(weights, np.float32).reshape(-1, 1)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["m"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["m", "W"], ["prob"]),
        ],
        "slab",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["N", len(weights), size, size]
            )
        ],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="pair-tests")
    model.ir_version = 8
    return bytes(model.SerializeToString())


def ct_series(
    folder: Path,
    n: int,
    *,
    positions: list[float] | None = None,
    bright: float = 0.0,
    patient: dict[str, str] | None = None,
    study_uid: str | None = None,
) -> list[Path]:
    """``n`` CT slices (32×32), returned in Instance Number order (file names reversed); slice
    ``i`` (Instance Number ``i + 1``) lies at z = ``positions[i]`` (default ``i + 1``) and is
    ``bright`` × 1000 HU lighter."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = study_uid or generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        ds = ct_instance(study_uid=study, series_uid=series, index=i + 1, patient=patient)
        if positions is not None:
            ds.ImagePositionPatient = [0.0, 0.0, positions[i]]
        arr = np.frombuffer(ds.PixelData, np.int16).astype(np.int32) + int(bright * 1000)
        ds.PixelData = np.clip(arr, -1024, 3000).astype(np.int16).tobytes()
        path = folder / f"f{n - i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_all(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]
