"""Pydantic model of a reporting module (the ACR Assist / CARDS 2.0 concepts) and its
load-time checks: every reference resolves and every element and value points to a CDE."""

from __future__ import annotations

import ast
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator

from pair.cde.catalog import Catalog, catalog
from pair.reporting import expr
from pair.reporting.conditions import (
    AnyN,
    Compare,
    Condition,
    HasValue,
    InsertPartial,
    InsertValue,
    Part,
    parse_condition,
    parse_parts,
    part_conditions,
    part_values,
    walk,
)

ElementType = Literal["choice", "multichoice", "integer", "numeric", "text", "computed"]
SECTIONS = ("findings", "impression", "recommendation", "citation")
IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"

CondField = Annotated[Condition, PlainValidator(lambda v: parse_condition(v))]
PartsField = Annotated[tuple[Part, ...], PlainValidator(lambda v: parse_parts(v, "parts"))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Choice(_Strict):
    value: str = Field(min_length=1)
    label: str = Field(min_length=1)
    cde: str | None = None
    report_text: str | None = None
    default: bool = False


class ValueBranch(_Strict):
    when: CondField
    value: str


class ValueDecision(_Strict):
    """A computed element's value decision point: the first branch that holds wins."""

    branches: list[ValueBranch] = Field(min_length=1)
    default: str | None = None


class Source(_Strict):
    vendor: str = ""
    app: str = ""
    version: str = ""


class Element(_Strict):
    id: str = Field(pattern=IDENT)
    type: ElementType
    label: str = Field(min_length=1)
    hint: str = ""
    cde: str | None = None
    coded: bool = True
    required: bool = False
    relevant_if: CondField | None = None
    required_if: CondField | None = None
    choices: list[Choice] = []
    min_choices: int = 0
    max_choices: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    digits: int | None = None
    max_length: int = 2000
    value_type: Literal["choice", "integer", "numeric"] | None = None  # computed only
    expression: str | None = None
    decision: ValueDecision | None = None
    source: Source | None = None
    # an input that overrides a computed element (the radiologist's category against the one
    # the findings give): signing a contradiction needs an explicit confirmation
    overrides: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Element:
        t = self.type
        if t in ("choice", "multichoice") and len(self.choices) < 2:
            raise ValueError(f"element {self.id}: a {t} element needs at least two choices")
        if t not in ("choice", "multichoice", "computed") and self.choices:
            raise ValueError(f"element {self.id}: only choice elements have choices")
        values = [c.value for c in self.choices]
        if len(set(values)) != len(values):
            raise ValueError(f"element {self.id}: choice values must be unique")
        if t == "choice" and sum(c.default for c in self.choices) > 1:
            raise ValueError(f"element {self.id}: at most one default choice")
        if t == "computed":
            if (self.expression is None) == (self.decision is None):
                raise ValueError(
                    f"computed element {self.id}: give exactly one of expression or decision"
                )
            if self.decision is not None:
                if not self.choices:
                    raise ValueError(f"computed element {self.id}: a decision needs choices")
                for b in [*(b.value for b in self.decision.branches), self.decision.default]:
                    if b is not None and b not in values:
                        raise ValueError(
                            f"computed element {self.id}: decision value {b!r} is "
                            f"not one of its choices {values}"
                        )
            if self.expression is not None:
                expr.parse(self.expression)
        elif self.expression is not None or self.decision is not None:
            raise ValueError(f"element {self.id}: only computed elements have expression/decision")
        if self.coded and not self.cde:
            raise ValueError(
                f"element {self.id}: coded elements must name a CDE (cde: RDE...); "
                "set coded: false for report options that are not observations"
            )
        return self

    @property
    def is_input(self) -> bool:
        return self.type != "computed"

    @property
    def kind(self) -> str:
        """choice | multichoice | integer | numeric | text (computed elements: their value)."""
        if self.type != "computed":
            return self.type
        if self.decision is not None:
            return "choice"
        return self.value_type or "numeric"

    def choice(self, value: str) -> Choice | None:
        return next((c for c in self.choices if c.value == value), None)

    def parsed_expression(self) -> ast.Expression | None:
        return expr.parse(self.expression) if self.expression else None


class Branch(_Strict):
    label: str = ""
    when: CondField | None = None
    endpoint: str | None = None
    decision: DecisionPoint | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Branch:
        if (self.endpoint is None) == (self.decision is None):
            raise ValueError("a branch leads to exactly one of endpoint or decision")
        return self


class DecisionPoint(_Strict):
    id: str = Field(pattern=IDENT)
    label: str = ""
    branches: list[Branch] = Field(min_length=1)
    default: str | None = None  # endpoint id of the DefaultBranch

    @model_validator(mode="before")
    @classmethod
    def _label(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("label"):
            data = {**data, "label": data.get("id", "")}
        return data


class Endpoint(_Strict):
    id: str = Field(pattern=IDENT)
    label: str = Field(min_length=1)
    sections: dict[Literal["findings", "impression", "recommendation", "citation"], PartsField]


class Module(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    label: str = Field(min_length=1)
    description: str = ""
    modality: Literal["CT", "CR", "DX", "CR/DX"]
    references: list[str] = []
    wording: Literal["verified", "local"] = "verified"
    wording_note: str = ""
    summary_element: str | None = None
    elements: list[Element] = Field(min_length=1)
    partials: dict[str, PartsField] = {}
    rules: DecisionPoint
    endpoints: list[Endpoint] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _expand_findings(cls, data: Any) -> Any:
        """``{findings: [ids]}`` parts become 'Label: value.' lines (elements with a value)."""
        if not isinstance(data, dict) or not isinstance(data.get("elements"), list):
            return data
        labels = {e.get("id"): e.get("label", "") for e in data["elements"] if isinstance(e, dict)}

        def expand(parts: Any) -> Any:
            if not isinstance(parts, list):
                return parts
            out: list[Any] = []
            for part in parts:
                if (
                    isinstance(part, dict)
                    and "findings" in part
                    and isinstance(part["findings"], list)
                ):
                    for el_id in part["findings"]:
                        if el_id not in labels:
                            raise ValueError(f"findings part: unknown element {el_id!r}")
                        out.append(
                            {
                                "when": {"has_value": el_id},
                                "then": [f"{labels[el_id]}: ", {"value": el_id}, ".", "newline"],
                            }
                        )
                elif isinstance(part, dict) and "when" in part:
                    out.append(
                        {
                            **part,
                            "then": expand(part.get("then")),
                            **({"else": expand(part["else"])} if "else" in part else {}),
                        }
                    )
                else:
                    out.append(part)
            return out

        data = dict(data)
        if isinstance(data.get("partials"), dict):
            data["partials"] = {k: expand(v) for k, v in data["partials"].items()}
        if isinstance(data.get("endpoints"), list):
            data["endpoints"] = [
                {**ep, "sections": {k: expand(v) for k, v in ep["sections"].items()}}
                if isinstance(ep, dict) and isinstance(ep.get("sections"), dict)
                else ep
                for ep in data["endpoints"]
            ]
        return data

    @model_validator(mode="after")
    def _references(self) -> Module:
        problems = check_references(self, catalog())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def element(self, element_id: str) -> Element:
        return self.by_id[element_id]

    @cached_property
    def by_id(self) -> dict[str, Element]:
        return {e.id: e for e in self.elements}

    def endpoint(self, endpoint_id: str) -> Endpoint:
        return next(e for e in self.endpoints if e.id == endpoint_id)

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"


def _decision_points(dp: DecisionPoint) -> list[DecisionPoint]:
    out = [dp]
    for b in dp.branches:
        if b.decision is not None:
            out.extend(_decision_points(b.decision))
    return out


def _check_condition(cond: Condition, where: str, els: dict[str, Element], out: list[str]) -> None:
    for c in walk(cond):
        if not isinstance(c, Compare | AnyN | HasValue):
            continue
        el = els.get(c.element)
        if el is None:
            out.append(f"{where}: condition refers to unknown element {c.element!r}")
            continue
        if isinstance(c, Compare):
            if el.kind in ("choice", "multichoice"):
                if not isinstance(c.value, str) or el.choice(c.value) is None:
                    out.append(
                        f"{where}: {c.element} has no choice {c.value!r}; allowed: "
                        f"{', '.join(ch.value for ch in el.choices)}"
                    )
            elif el.kind in ("integer", "numeric") and (
                isinstance(c.value, bool) or not isinstance(c.value, int | float)
            ):
                out.append(f"{where}: {c.element} is numeric; compare with a number")
        if isinstance(c, AnyN) and el.kind != "multichoice":
            out.append(f"{where}: any_n needs a multichoice element, {c.element} is {el.kind}")


def _check_cde(el: Element, cat: Catalog, out: list[str]) -> None:
    if not el.cde:
        return
    cde = cat.elements.get(el.cde)
    if cde is None:
        out.append(f"element {el.id}: CDE {el.cde!r} is not in the catalog")
        return
    want = {
        "choice": "value_set",
        "multichoice": "value_set",
        "integer": "integer",
        "numeric": "float",
        "text": "none",
    }[el.kind]
    if el.kind == "numeric" and cde.kind in ("integer", "float"):
        want = cde.kind
    if cde.kind != want:
        out.append(
            f"element {el.id}: CDE {el.cde} has type {cde.kind}, "
            f"not suitable for a {el.kind} element"
        )
        return
    if el.kind == "multichoice" and cde.max_cardinality < 2:
        out.append(f"element {el.id}: CDE {el.cde} allows one value only")
    codes = {v.code for v in cde.values}
    for ch in el.choices:
        if el.coded and not ch.cde:
            out.append(f"element {el.id}: choice {ch.value!r} needs a CDE value code")
        elif ch.cde and ch.cde not in codes:
            out.append(
                f"element {el.id}: choice {ch.value!r} names {ch.cde!r}, which is not a "
                f"value of {el.cde}; allowed: {', '.join(sorted(codes))}"
            )
    lo, hi = cde.minimum, cde.maximum
    if lo is not None and el.minimum is not None and el.minimum < lo:
        out.append(f"element {el.id}: minimum {el.minimum} is below CDE {el.cde} minimum {lo}")
    if hi is not None and el.maximum is not None and el.maximum > hi:
        out.append(f"element {el.id}: maximum {el.maximum} is above CDE {el.cde} maximum {hi}")


def check_references(module: Module, cat: Catalog) -> list[str]:
    """Every cross reference in a module, as a list of precise problems (empty = fine)."""
    out: list[str] = []
    els: dict[str, Element] = {}
    for el in module.elements:
        if el.id in els:
            out.append(f"element id {el.id!r} is used twice")
        els[el.id] = el
    for i, el in enumerate(module.elements):
        _check_cde(el, cat, out)
        if el.overrides is not None:
            target = els.get(el.overrides)
            if target is None or target.type != "computed" or not el.is_input:
                out.append(f"element {el.id}: overrides must name a computed element")
            elif {c.value for c in el.choices} - {c.value for c in target.choices}:
                out.append(f"element {el.id}: its choices must be choices of {el.overrides}")
        for name in ("relevant_if", "required_if"):
            cond = getattr(el, name)
            if cond is not None:
                _check_condition(cond, f"element {el.id}.{name}", els, out)
        if el.decision is not None:
            for j, b in enumerate(el.decision.branches):
                _check_condition(b.when, f"element {el.id}.decision.branches[{j}]", els, out)
        tree = el.parsed_expression()
        if tree is not None:
            earlier = {e.id for e in module.elements[:i]}
            for name in sorted(expr.names(tree)):
                if name not in els:
                    out.append(f"element {el.id}: expression refers to unknown element {name!r}")
                elif name not in earlier:
                    out.append(f"element {el.id}: expression uses {name!r}, defined after it")
    endpoint_ids = [e.id for e in module.endpoints]
    if len(set(endpoint_ids)) != len(endpoint_ids):
        out.append("endpoint ids must be unique")
    for dp in _decision_points(module.rules):
        for j, br in enumerate(dp.branches):
            if br.when is not None:
                _check_condition(br.when, f"rules {dp.id}.branches[{j}]", els, out)
            if br.endpoint is not None and br.endpoint not in endpoint_ids:
                out.append(f"rules {dp.id}.branches[{j}]: unknown endpoint {br.endpoint!r}")
        if dp.default is not None and dp.default not in endpoint_ids:
            out.append(f"rules {dp.id}: unknown default endpoint {dp.default!r}")
    texts: list[tuple[str, tuple[Part, ...]]] = [
        (f"partial {k}", v) for k, v in module.partials.items()
    ]
    texts += [(f"endpoint {e.id}.{s}", p) for e in module.endpoints for s, p in e.sections.items()]
    for where, parts in texts:
        for c in part_conditions(parts):
            _check_condition(c, where, els, out)
        for ref in part_values(parts):
            if isinstance(ref, InsertValue) and ref.element not in els:
                out.append(f"{where}: inserts unknown element {ref.element!r}")
            if isinstance(ref, InsertPartial) and ref.partial not in module.partials:
                out.append(f"{where}: inserts unknown partial {ref.partial!r}")
    if module.summary_element is not None and module.summary_element not in els:
        out.append(f"summary_element {module.summary_element!r} is not an element")
    return out
