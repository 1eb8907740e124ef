"""Checks on what a client sends for a draft: input values and AI suggestions.

A draft may be incomplete, but every value it holds must be valid; suggestions name an input
element, a valid value and the algorithm that made them. On signing each suggestion gets its
outcome (accepted, changed, rejected) against the final values.
"""

from __future__ import annotations

from typing import Any

from pair.core.errors import Invalid
from pair.reporting.engine import Evaluation, coerce_value, evaluate
from pair.reporting.model import Module


def check_suggestions(module: Module, raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Invalid("suggestions must be a list of {element, value, algorithm, version}.")
    out, problems = [], []
    for i, s in enumerate(raw):
        if not isinstance(s, dict) or not s.get("algorithm") or not s.get("version"):
            problems.append(f"suggestions[{i}]: needs element, value, algorithm and version")
            continue
        el = module.by_id.get(str(s.get("element")))
        if el is None or not el.is_input:
            problems.append(f"suggestions[{i}]: unknown input element {s.get('element')!r}")
            continue
        value, error = coerce_value(el, s.get("value"))
        if error:
            problems.append(f"suggestions[{i}] ({el.id}): {error}")
            continue
        out.append(
            {
                "element": el.id,
                "value": value,
                "algorithm": str(s["algorithm"])[:64],
                "version": str(s["version"])[:64],
                "outcome": "",
            }
        )
    if problems:
        raise Invalid("Invalid AI suggestions: " + "; ".join(problems), details=problems)
    return out


def check_draft_inputs(module: Module, inputs: Any) -> dict[str, Any]:
    """A draft may be incomplete, but every value it holds must be valid."""
    if inputs is None:
        return {}
    evaluate(module, inputs, allow_missing=True)
    return dict(inputs)


def outcomes(suggestions: list[dict[str, Any]], ev: Evaluation) -> list[dict[str, Any]]:
    out = []
    for s in suggestions:
        final = ev.values.get(s["element"])
        outcome = (
            "rejected" if final is None else ("accepted" if final == s["value"] else "changed")
        )
        out.append({**s, "outcome": outcome})
    return out
