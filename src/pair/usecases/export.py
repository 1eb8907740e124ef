"""Use-case exports (JSON, Markdown) and the field-by-field diff between two versions."""

from __future__ import annotations

from typing import Any

_SECTIONS = (
    ("overview", "Overview"),
    ("clinical_implementation", "Clinical implementation"),
    ("dataset_considerations", "Dataset considerations"),
    ("technical_specifications", "Technical specifications"),
    ("future_development", "Future development"),
    ("evaluation_plan", "PAIR evaluation plan"),
)


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _md(value: Any, depth: int) -> list[str]:
    pad = "  " * depth
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, dict | list):
                lines.append(f"{pad}- **{_label(k)}**:")
                lines.extend(_md(v, depth + 1))
            else:
                lines.append(f"{pad}- **{_label(k)}**: {v}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, dict | list):
                lines.append(f"{pad}-")
                lines.extend(_md(item, depth + 1))
            else:
                lines.append(f"{pad}- {item}")
        return lines
    return [f"{pad}{value}"]


def markdown(document: dict[str, Any], status: str) -> str:
    """A readable Markdown rendering in Define-AI section order."""
    ov = document["overview"]
    lines = [
        f"# {ov['title']}",
        "",
        f"Use case `{ov['id']}`, version {ov.get('version', 1)}, status {status}; "
        f"panel: {ov['panel']}.",
    ]
    for key, title in _SECTIONS:
        if key in document:
            lines += ["", f"## {title}", "", *_md(document[key], 0)]
    return "\n".join(lines) + "\n"


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}/{k}" if prefix else str(k), out)
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}/{i}", out)
    else:
        out[prefix] = value


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Changed leaves as ``{path, before, after}`` (None where a field was added or removed)."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(old, "", a)
    _flatten(new, "", b)
    return [
        {"path": p, "before": a.get(p), "after": b.get(p)}
        for p in sorted(set(a) | set(b))
        if a.get(p) != b.get(p) and p != "overview/version"
    ]
