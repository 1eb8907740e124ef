"""Build real ONNX models and packages for the algorithm tests (onnx.helper, no mocks)."""

from __future__ import annotations

import copy
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from pair.algorithms.manifest import Manifest
from pair.algorithms.package import sha256_file
from pair.algorithms.runner import LoadedAlgorithm
from pair.algorithms.wrap import png_to_dicom

DEMO_DIR = Path(__file__).resolve().parents[2] / "src/pair/algorithms/data/demo-cxr-opacity"
OPSET = [helper.make_opsetid("", 17)]

BASE_MANIFEST: dict[str, Any] = {
    "format_version": 1,
    "id": "test-cxr",
    "name": "Test CXR model",
    "version": "1.0.0",
    "vendor": "Test vendor",
    "licence": "Apache-2.0",
    "description": "Mean-intensity test model.",
    "intended_use": "Tests only.",
    "use_case_id": "test-use-case",
    "modality": ["CR", "DX"],
    "body_part": "CHEST",
    "model": {"file": "model.onnx", "sha256": "0" * 64},
    "input": {
        "tensor_name": "image",
        "layout": "NCHW",
        "dtype": "float32",
        "size": {"height": 32, "width": 32},
        "channels": 1,
        "resampling": "bilinear",
        "scaling": {"kind": "minmax"},
        "invert_monochrome1": True,
        "normalization": {"kind": "range", "min": 0.0, "max": 1.0},
        "aggregation": "max",
    },
    "output": {
        "kind": "binary",
        "tensor_name": "prob",
        "values": "probabilities",
        "classes": [
            {"name": "absent", "label": "Absent", "cde_code": "RDE1360.0"},
            {"name": "present", "label": "Present", "cde_code": "RDE1360.1"},
        ],
        "positive_class": "present",
        "recommended_threshold": 0.5,
    },
}


def manifest(**changes: Any) -> dict[str, Any]:
    """BASE_MANIFEST with dotted-path changes, e.g. ``**{"input.size.height": 64}``."""
    m = copy.deepcopy(BASE_MANIFEST)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = m
        for p in parents:
            target = target[p]
        if value is _DELETE:
            del target[leaf]
        else:
            target[leaf] = value
    return m


_DELETE = object()
DELETE: Any = _DELETE


def _finish(graph: onnx.GraphProto, opsets: list[Any] | None = None) -> bytes:
    model = helper.make_model(graph, opset_imports=opsets or OPSET, producer_name="pair-tests")
    model.ir_version = 8
    return bytes(model.SerializeToString())


def mean_model(
    *,
    in_name: str = "image",
    in_shape: list[Any] | None = None,
    in_type: int = TensorProto.FLOAT,
    out_name: str = "prob",
    out_width: int = 1,
    extra_nodes: list[onnx.NodeProto] | None = None,
    extra_inits: list[TensorProto] | None = None,
    final: str = "y",
    opsets: list[Any] | None = None,
) -> bytes:
    """``prob = mean(pixels)`` per class column: ``[N, C, H, W] → [N, out_width]``."""
    shape = in_shape or ["N", 1, 32, 32]
    n_in = int(np.prod([d for d in shape[1:] if isinstance(d, int)]))
    weights = np.full((n_in, out_width), 1.0 / n_in, dtype=np.float32)
    weights[:, 0] *= 0.5 if out_width > 1 else 1.0
    nodes = [
        helper.make_node("Flatten", ["x_in"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["y"]),
        *(extra_nodes or []),
        helper.make_node("Identity", [final], [out_name]),
    ]
    if in_type != TensorProto.FLOAT:
        nodes.insert(0, helper.make_node("Cast", [in_name], ["x_in"], to=TensorProto.FLOAT))
    else:
        nodes.insert(0, helper.make_node("Identity", [in_name], ["x_in"]))
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(in_name, in_type, shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", out_width])],
        initializer=[numpy_helper.from_array(weights, "W"), *(extra_inits or [])],
    )
    return _finish(graph, opsets)


def slow_model(iterations: int = 10**12) -> bytes:
    """Passes the contract checks, then spins in a Loop for ``iterations`` steps."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1]),
        ],
        initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    extra = [
        helper.make_node("Loop", ["trips", "cond", "v0"], ["v_final"], body=body),
        helper.make_node("Mul", ["v_final", "zero"], ["v_zero"]),
        helper.make_node("Add", ["y", "v_zero"], ["y_slow"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(iterations, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.zeros(1, np.float32), "v0"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
    ]
    return mean_model(extra_nodes=extra, extra_inits=inits, final="y_slow")


def memory_hog_model(elements: int = 2**31) -> bytes:
    """Allocates ``elements`` float32 values (8 GiB by default) at inference time."""
    extra = [
        helper.make_node(
            "ConstantOfShape",
            ["big_shape"],
            ["big"],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]),
        ),
        helper.make_node("ReduceSum", ["big"], ["big_sum"], keepdims=1),
        helper.make_node("Mul", ["big_sum", "zero"], ["big_zero"]),
        helper.make_node("Add", ["y", "big_zero"], ["y_big"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([elements], np.int64), "big_shape"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
    ]
    return mean_model(extra_nodes=extra, extra_inits=inits, final="y_big")


def custom_op_model() -> bytes:
    extra = [helper.make_node("Evil", ["y"], ["y_evil"], domain="com.example.vendor")]
    opsets = [*OPSET, helper.make_opsetid("com.example.vendor", 1)]
    return mean_model(extra_nodes=extra, final="y_evil", opsets=opsets)


def write_package(
    folder: Path,
    manifest_dict: dict[str, Any],
    model: bytes,
    *,
    fix_sha: bool = True,
    readme: str | None = "# Test model card\n",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(manifest_dict)
    if fix_sha:
        m["model"]["sha256"] = hashlib.sha256(model).hexdigest()
    (folder / m["model"].get("file", "model.onnx")).write_bytes(model)
    (folder / "pair-algorithm.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    if readme is not None:
        (folder / "README.md").write_text(readme)
    return folder


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, prefix + f.name)
    return buf.getvalue()


def zip_members(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16) | 0
            zf.writestr(info, target)
    return buf.getvalue()


def slow_if_bright_model(threshold: float = 0.05, iterations: int = 10**12) -> bytes:
    """Fast on dark (all-zero) images; loops ``iterations`` times when mean(pixels) > threshold."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1]),
        ],
        initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    extra = [
        helper.make_node("ReduceMean", ["x_in"], ["mean"], keepdims=0),
        helper.make_node("Greater", ["mean", "threshold"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["bright_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["bright_i", "trips"], ["n"]),
        helper.make_node("Loop", ["n", "cond", "v0"], ["v_final"], body=body),
        helper.make_node("Mul", ["v_final", "zero"], ["v_zero"]),
        helper.make_node("Add", ["y", "v_zero"], ["y_slow"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(threshold, np.float32), "threshold"),
        numpy_helper.from_array(np.array(iterations, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.zeros(1, np.float32), "v0"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
    ]
    return mean_model(extra_nodes=extra, extra_inits=inits, final="y_slow")


def load_algorithm(folder: Path) -> LoadedAlgorithm:
    """An unpacked package folder as the runner takes it (manifest, model path, checksum)."""
    m = Manifest.model_validate(yaml.safe_load((folder / "pair-algorithm.yaml").read_text()))
    return LoadedAlgorithm(m, folder / m.model.file, sha256_file(folder / m.model.file))


def wrap_shared_pngs(shared_data: Path, out: Path, n: int, *, varied: bool = False) -> list[Path]:
    """The first ``n`` shared chest PNGs as DICOM files in ``out``; ``varied``: every third
    MONOCHROME1 and one patient per image."""
    paths = []
    for i, png in enumerate(sorted((shared_data / "images").glob("*.png"))[:n]):
        paths.append(out / f"{png.stem}.dcm")
        if varied:
            png_to_dicom(png, paths[-1], monochrome1=i % 3 == 0, patient_id=f"P{i}")
        else:
            png_to_dicom(png, paths[-1])
    return paths
