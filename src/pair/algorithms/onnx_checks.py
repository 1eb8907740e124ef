"""Static checks of an ONNX model against its manifest (run inside the sandboxed worker).

The model file is vendor-supplied protobuf: parsing it and running ``onnx.checker`` happen in
the worker process (no network, memory limit, time limit), never in the server process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from pair.algorithms.manifest import Layout, Manifest, OutputKind
from pair.algorithms.postprocess import expected_widths

ALLOWED_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}
_DTYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}
_OUT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE}


def check_model_file(path: Path, manifest: dict[str, Any] | None) -> list[str]:
    """Every static problem of the model: readable, no external data, standard operators,
    ``onnx.checker`` (full), and, given a valid manifest, the input/output contract."""
    problems: list[str] = []
    model = _load_onnx(path, problems)
    if model is not None and manifest is not None:
        problems += check_io(model, Manifest.model_validate(manifest))
    return problems


def _load_onnx(path: Path, problems: list[str]) -> onnx.ModelProto | None:
    name = path.name
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        problems.append(f"{name}: not a readable ONNX model ({type(exc).__name__}: {exc})"[:500])
        return None
    external = [
        t.name for t in _all_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL
    ]
    if external:
        problems.append(
            f"{name}: tensors stored as external data are not allowed "
            f"({', '.join(external[:5])}); embed the weights in the .onnx file"
        )
        return None
    domain_problems = check_domains(model)
    problems += domain_problems
    if not domain_problems:
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:
            problems.append(f"{name}: ONNX checker: {str(exc).strip()}"[:800])
    return model


def _all_tensors(graph: onnx.GraphProto) -> list[TensorProto]:
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                tensors += _all_tensors(g)
    return tensors


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                nodes += _all_nodes(g)
    return nodes


def check_domains(model: onnx.ModelProto) -> list[str]:
    """Only standard ONNX operators: custom domains could load vendor code into onnxruntime."""
    problems = []
    allowed = "only the default ai.onnx and ai.onnx.ml domains are allowed"
    for op in model.opset_import:
        if op.domain not in ALLOWED_DOMAINS:
            problems.append(f"custom operator domain {op.domain!r} in opset_import: {allowed}")
    for node in _all_nodes(model.graph):
        if node.domain not in ALLOWED_DOMAINS:
            problems.append(
                f"node {node.name or '(unnamed)'} uses custom operator "
                f"{node.domain}::{node.op_type}: {allowed}"
            )
    for fn in model.functions:
        problems.append(f"model-local function {fn.domain}::{fn.name} is not allowed: {allowed}")
    return problems


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    shape = vi.type.tensor_type.shape
    if not vi.type.tensor_type.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return out


def _fmt(dims: list[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def check_io(model: onnx.ModelProto, manifest: Manifest) -> list[str]:
    """The graph's input and output names, element types and shapes match the manifest."""
    problems: list[str] = []
    inits = {t.name for t in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in inits}
    spec = manifest.input
    if spec.tensor_name not in inputs:
        problems.append(
            f"input.tensor_name {spec.tensor_name!r} is not an input of the model; "
            f"model inputs: {sorted(inputs) or 'none'}"
        )
    else:
        vi = inputs[spec.tensor_name]
        elem = vi.type.tensor_type.elem_type
        if _DTYPES.get(elem) != spec.dtype.value:
            problems.append(
                f"input {spec.tensor_name!r} has element type "
                f"{TensorProto.DataType.Name(elem)}, manifest input.dtype is "
                f"{spec.dtype.value}"
            )
        dims = _dims(vi)
        c, h, w = spec.channels, spec.size.height, spec.size.width
        want: list[int | str | None] = (
            ["N", c, h, w] if spec.layout == Layout.NCHW else ["N", h, w, c]
        )
        bad = len(dims) != 4 or any(
            isinstance(d, int) and d != e for d, e in zip(dims[1:], want[1:], strict=True)
        )
        if not bad and isinstance(dims[0], int) and dims[0] != 1:
            bad = True
        if bad:
            problems.append(
                f"input {spec.tensor_name!r} has shape {_fmt(dims)}; the manifest "
                f"(layout {spec.layout.value}, channels {c}, size {h}x{w}) needs "
                f"{_fmt(want)} with a dynamic or 1 batch dimension"
            )
    extra = sorted(set(inputs) - {spec.tensor_name})
    if extra:
        problems.append(
            f"model has inputs the manifest does not feed: {extra}; "
            "a package model takes exactly one image input"
        )
    outputs = {vi.name: vi for vi in model.graph.output}
    out = manifest.output
    if out.tensor_name not in outputs:
        problems.append(
            f"output.tensor_name {out.tensor_name!r} is not an output of the model; "
            f"model outputs: {sorted(outputs)}"
        )
        return problems
    vi = outputs[out.tensor_name]
    elem = vi.type.tensor_type.elem_type
    if elem not in _OUT_TYPES:
        problems.append(
            f"output {out.tensor_name!r} has element type "
            f"{TensorProto.DataType.Name(elem)}; a float tensor is required"
        )
    dims = _dims(vi)
    widths = sorted(expected_widths(out))
    ok_rank1 = len(dims) == 1 and 1 in widths and out.kind != OutputKind.MULTICLASS
    ok_rank2 = len(dims) == 2 and (not isinstance(dims[1], int) or dims[1] in widths)
    if dims and not (ok_rank1 or ok_rank2):
        problems.append(
            f"output {out.tensor_name!r} has shape {_fmt(dims)}; for kind "
            f"{out.kind.value} with {len(out.classes)} class(es) it must be "
            f"[N, {' or '.join(map(str, widths))}]" + (" or [N]" if 1 in widths else "")
        )
    return problems
