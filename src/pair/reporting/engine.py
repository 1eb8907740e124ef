"""Evaluate a module against inputs: validate, settle relevance, compute, walk the rules to
one endpoint and render its report sections (the CARDS 2.0 semantics)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pair.core.errors import Invalid
from pair.reporting import expr
from pair.reporting.conditions import (
    InsertPartial,
    InsertValue,
    Newline,
    Part,
    Text,
    When,
    holds,
)
from pair.reporting.model import DecisionPoint, Element, Module


@dataclass
class Evaluation:
    module_id: str
    module_version: str
    values: dict[str, Any]
    relevant: list[str]
    required: list[str]
    computed: dict[str, Any]
    endpoint: str
    endpoint_label: str
    sections: dict[str, str]
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    # an override that contradicts the computed value: {element, assigned, computed} + labels
    contradiction: dict[str, str] | None = None

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def all_values(self) -> dict[str, Any]:
        return {**self.values, **{k: v for k, v in self.computed.items() if v is not None}}

    @property
    def text(self) -> str:
        """Narrative report: the non-empty sections with upper-case headings."""
        blocks = [f"{name.upper()}:\n{body}" for name, body in self.sections.items() if body]
        return "\n\n".join(blocks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module_id,
            "module_version": self.module_version,
            "values": self.values,
            "relevant": self.relevant,
            "required": self.required,
            "computed": self.computed,
            "endpoint": self.endpoint,
            "endpoint_label": self.endpoint_label,
            "sections": self.sections,
            "text": self.text,
            "ignored": self.ignored,
            "missing": self.missing,
            "complete": self.complete,
            "contradiction": self.contradiction,
        }


def coerce_value(el: Element, raw: Any) -> tuple[Any, str | None]:
    """The typed value, or an error message saying what is allowed."""
    allowed = ", ".join(c.value for c in el.choices)
    if el.type == "choice":
        if not isinstance(raw, str) or el.choice(raw) is None:
            return None, f"value {raw!r} is not allowed; allowed: {allowed}"
        return raw, None
    if el.type == "multichoice":
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            return None, f"expected a list of choices from: {allowed}"
        bad = [v for v in raw if el.choice(v) is None]
        if bad:
            return None, f"values {bad!r} are not allowed; allowed: {allowed}"
        if len(set(raw)) != len(raw):
            return None, "choices must not repeat"
        if el.max_choices is not None and len(raw) > el.max_choices:
            return None, f"at most {el.max_choices} choices"
        # keep the module's order so text and codes are stable
        return [c.value for c in el.choices if c.value in raw], None
    if el.type == "text":
        if not isinstance(raw, str):
            return None, "expected text"
        if len(raw) > el.max_length:
            return None, f"text longer than {el.max_length} characters"
        return raw.strip(), None
    # integer / numeric
    value: Any = raw
    if isinstance(raw, str):
        try:
            value = int(raw) if el.type == "integer" else float(raw)
        except ValueError:
            return None, f"expected {'an integer' if el.type == 'integer' else 'a number'}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"expected {'an integer' if el.type == 'integer' else 'a number'}"
    if el.type == "integer":
        if isinstance(value, float) and not value.is_integer():
            return None, "expected an integer"
        value = int(value)
    elif not math.isfinite(value):
        return None, "expected a finite number"
    else:
        value = float(value)
    if el.minimum is not None and value < el.minimum:
        return None, f"{value} is below the minimum {_fmt(el.minimum)}"
    if el.maximum is not None and value > el.maximum:
        return None, f"{value} is above the maximum {_fmt(el.maximum)}"
    return value, None


def _fmt(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else str(n)


def _compute(module: Module, values: dict[str, Any]) -> dict[str, Any]:
    ctx = dict(values)
    computed: dict[str, Any] = {}
    for el in module.elements:
        if el.is_input:
            continue
        result: Any = None
        if el.relevant_if is None or holds(el.relevant_if, ctx):
            if el.decision is not None:
                result = el.decision.default
                for b in el.decision.branches:
                    if holds(b.when, ctx):
                        result = b.value
                        break
            else:
                tree = el.parsed_expression()
                assert tree is not None
                result = expr.evaluate(tree, ctx)
                if result is not None and el.value_type == "integer":
                    result = round(result)
        computed[el.id] = result
        if result is not None:
            ctx[el.id] = result
    return computed


def _walk(dp: DecisionPoint, ctx: Mapping[str, Any]) -> str | None:
    for b in dp.branches:
        if b.when is None or holds(b.when, ctx):
            if b.endpoint is not None:
                return b.endpoint
            assert b.decision is not None
            found = _walk(b.decision, ctx)
            if found is not None:
                return found
    return dp.default


def format_value(el: Element, value: Any, digits: int | None = None) -> str:
    if value is None:
        return ""
    if el.kind == "choice":
        ch = el.choice(value)
        return (ch.report_text or ch.label) if ch else str(value)
    if el.kind == "multichoice":
        labels = [(c.report_text or c.label) for c in el.choices if c.value in value]
        return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
    if isinstance(value, float):
        d = digits if digits is not None else el.digits
        text = f"{value:.{d}f}" if d is not None else f"{value:g}"
    else:
        text = str(value)
    return f"{text} {el.unit}" if el.unit and el.kind in ("integer", "numeric") else text


def _render(module: Module, parts: tuple[Part, ...], ctx: Mapping[str, Any], depth: int = 0) -> str:
    if depth > 10:
        raise Invalid(f"module {module.key}: partials nest deeper than 10 levels")
    out: list[str] = []
    for p in parts:
        if isinstance(p, Text):
            out.append(p.text)
        elif isinstance(p, Newline):
            out.append("\n")
        elif isinstance(p, InsertValue):
            out.append(format_value(module.element(p.element), ctx.get(p.element), p.digits))
        elif isinstance(p, InsertPartial):
            out.append(_render(module, module.partials[p.partial], ctx, depth + 1))
        elif isinstance(p, When):
            branch = p.then if holds(p.condition, ctx) else p.otherwise
            out.append(_render(module, branch, ctx, depth + 1))
    return "".join(out)


def _clean(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return "\n".join(lines).strip()


def evaluate(
    module: Module, inputs: Mapping[str, Any], *, allow_missing: bool = False
) -> Evaluation:
    """Validate ``inputs`` (element id → value) and produce the report for one endpoint.

    Values of elements that are not relevant are ignored (listed in ``ignored``), so a form
    may keep stale fields. Every problem is reported at once in ``Invalid.details``. With
    ``allow_missing`` (draft preview) missing required values are listed in ``missing``
    instead of raising; the endpoint is then provisional.
    """
    if not isinstance(inputs, Mapping):
        raise Invalid("Report inputs must be an object mapping element ids to values.")
    els = module.by_id
    problems: list[dict[str, str]] = []
    provided: dict[str, Any] = {}
    for key, raw in inputs.items():
        el = els.get(key)
        if el is None:
            known = ", ".join(e.id for e in module.elements if e.is_input)
            problems.append({"element": key, "message": f"unknown element; known: {known}"})
        elif not el.is_input:
            problems.append({"element": key, "message": "is computed and cannot be entered"})
        elif raw is None or raw == "" or raw == []:
            continue
        else:
            value, error = coerce_value(el, raw)
            if error:
                problems.append({"element": key, "message": error})
            else:
                provided[key] = value
    _raise(module, problems)

    inputs_els = [e for e in module.elements if e.is_input]
    relevant = {e.id for e in inputs_els}
    for _ in range(len(inputs_els) + 2):
        values = {k: v for k, v in provided.items() if k in relevant}
        for e in inputs_els:
            if e.id in relevant and e.id not in values:
                default = next((c.value for c in e.choices if c.default), None)
                if default is not None:
                    values[e.id] = default
        computed = _compute(module, values)
        ctx = {**values, **{k: v for k, v in computed.items() if v is not None}}
        now = {e.id for e in inputs_els if e.relevant_if is None or holds(e.relevant_if, ctx)}
        if now == relevant:
            break
        relevant = now
    else:
        raise Invalid(f"module {module.key}: element relevance does not settle for these inputs")

    required = [
        e.id
        for e in inputs_els
        if e.id in relevant
        and (e.required or (e.required_if is not None and holds(e.required_if, ctx)))
    ]
    missing: list[str] = []
    for e_id in required:
        el = els[e_id]
        value = values.get(e_id)
        if value is None:
            missing.append(e_id)
            if not allow_missing:
                problems.append({"element": e_id, "message": f"required ({el.label})"})
        elif el.type == "multichoice" and len(value) < max(el.min_choices, 1):
            problems.append(
                {"element": e_id, "message": f"choose at least {max(el.min_choices, 1)}"}
            )
    _raise(module, problems)

    order = [e.id for e in module.elements]
    if missing:
        # an incomplete draft has no endpoint and no computed result yet: a category computed
        # from unanswered findings would read as a finding ("Negative for pneumonia")
        return Evaluation(
            module_id=module.id,
            module_version=module.version,
            values={k: values[k] for k in order if k in values},
            relevant=[k for k in order if k in relevant],
            required=required,
            computed=dict.fromkeys(computed),
            endpoint="",
            endpoint_label="",
            sections={},
            ignored=sorted(k for k in provided if k not in relevant),
            missing=missing,
        )
    endpoint_id = _walk(module.rules, ctx)
    if endpoint_id is None:
        raise Invalid(
            f"module {module.key}: no rule branch matches these inputs and the "
            "decision point has no default; the module is incomplete"
        )
    endpoint = module.endpoint(endpoint_id)
    sections: dict[str, str] = {
        name: _clean(_render(module, parts, ctx)) for name, parts in endpoint.sections.items()
    }
    return Evaluation(
        module_id=module.id,
        module_version=module.version,
        values={k: values[k] for k in order if k in values},
        relevant=[k for k in order if k in relevant],
        required=required,
        computed=computed,
        endpoint=endpoint.id,
        endpoint_label=endpoint.label,
        sections=sections,
        ignored=sorted(k for k in provided if k not in relevant),
        missing=missing,
        contradiction=_contradiction(module, values, computed),
    )


def _contradiction(
    module: Module, values: Mapping[str, Any], computed: Mapping[str, Any]
) -> dict[str, str] | None:
    """The first override whose value differs from the computed value it overrides."""
    for el in module.elements:
        if el.overrides is None or values.get(el.id) is None:
            continue
        target = module.element(el.overrides)
        assigned, derived = values[el.id], computed.get(el.overrides)
        if derived is not None and assigned != derived:
            return {
                "element": el.id,
                "assigned": str(assigned),
                "assigned_label": format_value(el, assigned),
                "computed": str(derived),
                "computed_label": format_value(target, derived),
            }
    return None


def _raise(module: Module, problems: list[dict[str, str]]) -> None:
    if problems:
        listing = "; ".join(f"{p['element']}: {p['message']}" for p in problems)
        raise Invalid(f"Invalid inputs for module {module.key}: {listing}.", details=problems)
