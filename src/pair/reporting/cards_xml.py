"""Import and export ACR Assist CARDS 2.0 XML (``ReportingModule``).

CARDS 2.0 has no place for a CDE code on a choice or on a computed element, no free-text
element, no choice list for computed values and no significant digits on ReportText; PAIR
writes those as attributes/elements in its own namespace (``pair:``), which a CARDS consumer
can ignore. Conditions, conditional relevance/requirement, decision points, endpoints,
partials and report text use the standard elements.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date
from typing import Any

from pair.core.errors import Invalid
from pair.reporting.conditions import (
    COMPARISONS,
    AllOf,
    AnyN,
    AnyOf,
    Compare,
    Condition,
    HasValue,
    InsertPartial,
    InsertValue,
    Newline,
    Not,
    Part,
    Text,
    When,
    to_yaml,
)
from pair.reporting.loader import parse_module
from pair.reporting.model import DecisionPoint, Element, Module

PAIR_NS = "urn:pair:cards-extension:1"
P = f"{{{PAIR_NS}}}"
ET.register_namespace("pair", PAIR_NS)
_TYPE_TAG = {
    "choice": "ChoiceDataElement",
    "multichoice": "MultiChoiceDataElement",
    "integer": "IntegerDataElement",
    "numeric": "NumericDataElement",
    "computed": "ComputedDataElement",
    "text": f"{P}TextDataElement",
}
_TAG_TYPE = {v: k for k, v in _TYPE_TAG.items()}
_COND_TAG = {v: k for k, v in COMPARISONS.items()}
_MODALITY = {"CT": "CT", "CR": "CR", "DX": "DX", "CR/DX": "CR/DX"}


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        node.text = text
    return node


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# ---- export -----------------------------------------------------------------------------


def _cond_xml(parent: ET.Element, cond: Condition) -> None:
    if isinstance(cond, Compare):
        value = cond.value if isinstance(cond.value, str) else _num(cond.value)
        _sub(parent, COMPARISONS[cond.op], DataElementId=cond.element, ComparisonValue=value)
    elif isinstance(cond, AnyN):
        _sub(
            parent,
            "HasAnyNChoicesCondition",
            DataElementId=cond.element,
            MinimumChoices=str(cond.minimum),
        )
    elif isinstance(cond, HasValue):
        _sub(parent, "SectionIf", DataElementId=cond.element)
    elif isinstance(cond, AllOf | AnyOf):
        node = _sub(parent, "AndCondition" if isinstance(cond, AllOf) else "OrCondition")
        for c in cond.items:
            _cond_xml(node, c)
    else:
        _cond_xml(_sub(parent, "NotCondition"), cond.item)


def _codable(parent: ET.Element, name: str, code: str) -> None:
    cc = _sub(parent, "CodableConcept", Name=name)
    coding = _sub(cc, "Coding")
    _sub(coding, "System", Value="RadElement")
    _sub(coding, "Version", Value="")
    _sub(coding, "Code", Value=code)
    _sub(coding, "Display", Value=name)


def _choices(parent: ET.Element, el: Element, tag: str = "ChoiceInfo") -> None:
    info = _sub(parent, tag)
    for ch in el.choices:
        attrs = {"IsDefault": "true"} if ch.default else {}
        if ch.cde:
            attrs[f"{P}cde"] = ch.cde
        node = _sub(info, "Choice", **attrs)
        _sub(node, "Value", ch.value)
        _sub(node, "Label", ch.label)
        if ch.report_text is not None:
            _sub(node, "ReportText", ch.report_text)


def _element_xml(parent: ET.Element, el: Element, seq: int) -> None:
    attrs: dict[str, str] = {"Id": el.id, "DisplaySequence": str(seq)}
    if el.type != "computed" and el.required:
        attrs["IsRequired"] = "true"
    if el.unit:
        attrs["Unit"] = el.unit
    if el.cde and (el.type == "computed" or not el.coded):
        attrs[f"{P}cde"] = el.cde
    if not el.coded:
        attrs[f"{P}coded"] = "false"
    if el.type == "multichoice":
        attrs[f"{P}minChoices"] = str(el.min_choices)
        if el.max_choices is not None:
            attrs[f"{P}maxChoices"] = str(el.max_choices)
    if el.type == "text":
        attrs[f"{P}maxLength"] = str(el.max_length)
    if el.digits is not None:
        attrs[f"{P}digits"] = str(el.digits)
    if el.type == "computed" and el.value_type:
        attrs[f"{P}valueType"] = el.value_type
    if el.overrides:
        attrs[f"{P}overrides"] = el.overrides
    node = _sub(parent, _TYPE_TAG[el.type], **attrs)
    if el.cde and el.coded and el.type != "computed":
        _codable(node, el.label, el.cde)
    _sub(node, "Label", el.label)
    if el.hint:
        _sub(node, "Hint", el.hint)
    if el.source is not None:
        src = _sub(node, "Source")
        _sub(src, "Vendor", el.source.vendor)
        _sub(src, "Appname", el.source.app)
        _sub(src, "Version", el.source.version)
    if el.type in ("choice", "multichoice"):
        _choices(node, el)
    if el.type in ("integer", "numeric"):
        if el.minimum is not None:
            _sub(node, "Minimum", _num(el.minimum))
        if el.maximum is not None:
            _sub(node, "Maximum", _num(el.maximum))
    if el.type == "computed":
        if el.choices:
            _choices(node, el, f"{P}Choices")
        if el.expression is not None:
            _sub(node, "ArithmeticExpression", el.expression)
        else:
            assert el.decision is not None
            dp = _sub(node, "DecisionPoint")
            for b in el.decision.branches:
                br = _sub(dp, "Branch")
                _cond_xml(br, b.when)
                _sub(br, "TextExpression", b.value)
            if el.decision.default is not None:
                _sub(_sub(dp, "DefaultBranch"), "TextExpression", el.decision.default)
    props: list[tuple[Condition, str, str]] = []
    if el.relevant_if is not None:
        props.append((Not(el.relevant_if), "IsRelevant", "false"))
    if el.required_if is not None:
        props.append((el.required_if, "IsRequired", "true"))
    if props:
        cps = _sub(node, "ConditionalProperties")
        for cond, key, value in props:
            cp = _sub(cps, "ConditionalProperty")
            _cond_xml(cp, cond)
            _sub(cp, key, value)


def _decision_xml(parent: ET.Element, dp: DecisionPoint) -> None:
    node = _sub(parent, "DecisionPoint", Id=dp.id)
    _sub(node, "Label", dp.label or dp.id)
    for b in dp.branches:
        br = _sub(node, "Branch")
        if b.label:
            _sub(br, "Label", b.label)
        if b.when is not None:
            _cond_xml(br, b.when)
        if b.endpoint is not None:
            _sub(br, "EndPointRef", EndPointId=b.endpoint)
        else:
            assert b.decision is not None
            _decision_xml(br, b.decision)
    if dp.default is not None:
        _sub(_sub(node, "DefaultBranch"), "EndPointRef", EndPointId=dp.default)


def _parts_xml(branch: ET.Element, parts: tuple[Part, ...], els: dict[str, Element]) -> None:
    """Each part becomes one child Branch, so order survives CARDS' Branch structure."""
    for p in parts:
        if isinstance(p, When):
            _parts_xml(_cond_branch(branch, p.condition), p.then, els)
            if p.otherwise:
                _parts_xml(_cond_branch(branch, Not(p.condition)), p.otherwise, els)
            continue
        child = _sub(branch, "Branch")
        if isinstance(p, Text):
            _sub(child, "ReportText", p.text, Type="PlainText")
        elif isinstance(p, Newline):
            _sub(child, "ReportText", Type="Newline")
        elif isinstance(p, InsertValue):
            attrs = {"Value": p.element}
            if p.digits is not None:
                attrs[f"{P}digits"] = str(p.digits)
            _sub(child, "ReportText", Type="InsertDataElementValue", **attrs)
        elif isinstance(p, InsertPartial):
            _sub(child, "ReportText", Type="InsertPartialTemplate", Value=p.partial)


def _cond_branch(parent: ET.Element, cond: Condition) -> ET.Element:
    br = _sub(parent, "Branch")
    _cond_xml(br, cond)
    return br


def export_xml(module: Module) -> str:
    """The module as a CARDS 2.0 ``ReportingModule`` document."""
    root = ET.Element("ReportingModule")
    meta = _sub(root, "Metadata", **{f"{P}wording": module.wording})
    _sub(meta, "Label", module.label)
    _sub(meta, "ID", module.id)
    _sub(meta, "SchemaVersion", "2.0")
    _sub(meta, "ModuleVersion", module.version)
    today = date.today().isoformat()
    _sub(meta, "CreatedDate", today)
    _sub(meta, "LastModifiedDate", today)
    info = _sub(meta, "Info")
    _sub(info, "Description", module.description)
    if module.references:
        refs = _sub(info, "References")
        for r in module.references:
            _sub(refs, "Citation", r)
    if module.wording_note:
        _sub(meta, f"{P}WordingNote", module.wording_note)
    if module.summary_element:
        _sub(meta, f"{P}SummaryElement", module.summary_element)
    exams = _sub(meta, "ApplicableExams")
    _sub(exams, "ApplicableExamCategory", module.modality, Axis="Modality")
    _sub(exams, "ApplicableExamCategory", "Chest", Axis="Anatomy")
    data = _sub(root, "DataElements")
    for i, el in enumerate(module.elements, start=1):
        _element_xml(data, el, i)
    _decision_xml(_sub(root, "Rules"), module.rules)
    eps = _sub(root, "EndPoints")
    for pid, parts in module.partials.items():
        _parts_xml(_sub(_sub(eps, "TemplatePartial", Id=pid), "Branch"), parts, module.by_id)
    for ep in module.endpoints:
        node = _sub(eps, "EndPoint", Id=ep.id)
        _sub(node, "Label", ep.label)
        sections = _sub(node, "ReportSections")
        for name, parts in ep.sections.items():
            sec = _sub(sections, "ReportSection", SectionId=name)
            _parts_xml(_sub(sec, "Branch"), parts, module.by_id)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


# ---- import -----------------------------------------------------------------------------


class _Reader:
    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds = kinds  # element id -> type, to type ComparisonValue

    def value(self, element: str, raw: str) -> Any:
        kind = self.kinds.get(element)
        try:
            if kind == "integer":
                return int(raw)
            if kind == "numeric":
                return float(raw)
        except ValueError:
            raise Invalid(
                f"CARDS XML: comparison value {raw!r} of {element} is not a number"
            ) from None
        return raw

    def condition(self, node: ET.Element) -> Condition:
        tag = node.tag
        if tag in _COND_TAG:
            el = node.get("DataElementId", "")
            return Compare(_COND_TAG[tag], el, self.value(el, node.get("ComparisonValue", "")))
        if tag == "HasAnyNChoicesCondition":
            return AnyN(node.get("DataElementId", ""), int(node.get("MinimumChoices", "1")))
        if tag == "SectionIf":
            return HasValue(node.get("DataElementId", ""))
        if tag == "SectionIfNot":
            return Not(HasValue(node.get("DataElementId", "")))
        children = [c for c in node if c.tag in _CONDITION_TAGS]
        if tag in ("AndCondition", "OrCondition"):
            items = tuple(self.condition(c) for c in children)
            return AllOf(items) if tag == "AndCondition" else AnyOf(items)
        if tag == "NotCondition":
            if len(children) == 1:
                return Not(self.condition(children[0]))
            return Not(AllOf(tuple(self.condition(c) for c in children)))
        raise Invalid(f"CARDS XML: unsupported condition <{tag}>")

    def branch_condition(self, node: ET.Element) -> Condition | None:
        found = [c for c in node if c.tag in _CONDITION_TAGS]
        return self.condition(found[0]) if found else None

    def parts(self, branch: ET.Element) -> list[Any]:
        out: list[Any] = []
        for rt in branch.findall("ReportText"):
            kind = rt.get("Type")
            if kind == "PlainText":
                out.append({"text": rt.text or ""})
            elif kind == "Newline":
                out.append("newline")
            elif kind == "Space":
                out.append({"text": " "})
            elif kind == "Tab":
                out.append({"text": "\t"})
            elif kind == "InsertDataElementValue":
                part: dict[str, Any] = {"value": rt.get("Value", "")}
                if rt.get(f"{P}digits"):
                    part["digits"] = int(rt.get(f"{P}digits", "0"))
                out.append(part)
            elif kind == "InsertPartialTemplate":
                out.append({"partial": rt.get("Value", "")})
            else:
                raise Invalid(f"CARDS XML: unknown ReportText Type {kind!r}")
        for child in branch.findall("Branch"):
            cond = self.branch_condition(child)
            inner = self.parts(child)
            if cond is None:
                out.extend(inner)
            elif (
                isinstance(cond, Not)
                and out
                and isinstance(out[-1], dict)
                and "when" in out[-1]
                and out[-1]["when"] == to_yaml(cond.item)
                and "else" not in out[-1]
            ):
                out[-1]["else"] = inner
            else:
                out.append({"when": to_yaml(cond), "then": inner})
        return out

    def decision(self, node: ET.Element) -> dict[str, Any]:
        branches = []
        for b in node.findall("Branch"):
            item: dict[str, Any] = {"label": b.findtext("Label", "")}
            cond = self.branch_condition(b)
            if cond is not None:
                item["when"] = to_yaml(cond)
            ref = b.find("EndPointRef")
            if ref is not None:
                item["endpoint"] = ref.get("EndPointId")
            elif b.find("DecisionPoint") is not None:
                item["decision"] = self.decision(b.find("DecisionPoint"))  # type: ignore[arg-type]
            else:
                raise Invalid("CARDS XML: a rules Branch needs an EndPointRef or a DecisionPoint")
            branches.append(item)
        out: dict[str, Any] = {
            "id": node.get("Id"),
            "label": node.findtext("Label", ""),
            "branches": branches,
        }
        default = node.find("DefaultBranch/EndPointRef")
        if default is not None:
            out["default"] = default.get("EndPointId")
        elif node.find("DefaultBranch/DecisionPoint") is not None:
            raise Invalid("CARDS XML: a DefaultBranch leading to a DecisionPoint is not supported")
        return out


_CONDITION_TAGS = {
    *_COND_TAG,
    "HasAnyNChoicesCondition",
    "SectionIf",
    "SectionIfNot",
    "AndCondition",
    "OrCondition",
    "NotCondition",
}


def _choice_list(info: ET.Element | None) -> list[dict[str, Any]]:
    out = []
    for ch in info.findall("Choice") if info is not None else []:
        item: dict[str, Any] = {
            "value": ch.findtext("Value", ""),
            "label": ch.findtext("Label", ""),
        }
        if ch.get(f"{P}cde"):
            item["cde"] = ch.get(f"{P}cde")
        if ch.find("ReportText") is not None:
            item["report_text"] = ch.findtext("ReportText", "")
        if ch.get("IsDefault") == "true":
            item["default"] = True
        out.append(item)
    return out


def _element_dict(node: ET.Element, reader: _Reader) -> dict[str, Any]:
    kind = _TAG_TYPE.get(node.tag)
    if kind is None:
        raise Invalid(
            f"CARDS XML: unsupported data element <{node.tag}> (supported: "
            f"{', '.join(t for t in _TAG_TYPE if not t.startswith('{'))})"
        )
    d: dict[str, Any] = {"id": node.get("Id"), "type": kind, "label": node.findtext("Label", "")}
    if node.findtext("Hint"):
        d["hint"] = node.findtext("Hint")
    code = node.find("CodableConcept/Coding/Code")
    d["cde"] = code.get("Value") if code is not None else node.get(f"{P}cde")
    # a foreign (non-PAIR) element without a CodableConcept is imported as uncoded
    default_coded = "true" if d["cde"] else "false"
    d["coded"] = node.get(f"{P}coded", default_coded) == "true"
    if node.get("IsRequired") == "true":
        d["required"] = True
    for attr, key, conv in (
        ("Unit", "unit", str),
        (f"{P}digits", "digits", int),
        (f"{P}minChoices", "min_choices", int),
        (f"{P}maxChoices", "max_choices", int),
        (f"{P}maxLength", "max_length", int),
        (f"{P}valueType", "value_type", str),
        (f"{P}overrides", "overrides", str),
    ):
        if node.get(attr) is not None:
            d[key] = conv(node.get(attr, ""))
    for tag, key in (("Minimum", "minimum"), ("Maximum", "maximum")):
        if node.findtext(tag) is not None:
            d[key] = float(node.findtext(tag, "0"))
    src = node.find("Source")
    if src is not None:
        d["source"] = {
            "vendor": src.findtext("Vendor", ""),
            "app": src.findtext("Appname", ""),
            "version": src.findtext("Version", ""),
        }
    info = node.find("ChoiceInfo")
    if info is None:
        info = node.find(f"{P}Choices")
    if info is not None:
        d["choices"] = _choice_list(info)
    if kind == "computed":
        if node.find("ArithmeticExpression") is not None:
            d["expression"] = node.findtext("ArithmeticExpression", "").strip()
        dp = node.find("DecisionPoint")
        if dp is not None:
            branches = []
            for b in dp.findall("Branch"):
                cond = reader.branch_condition(b)
                if cond is None:
                    raise Invalid(f"CARDS XML: computed {d['id']}: every Branch needs a condition")
                branches.append(
                    {"when": to_yaml(cond), "value": (b.findtext("TextExpression") or "").strip()}
                )
            d["decision"] = {"branches": branches}
            default = dp.findtext("DefaultBranch/TextExpression")
            if default is not None:
                d["decision"]["default"] = default.strip()
    for cp in node.findall("ConditionalProperties/ConditionalProperty"):
        cond = reader.branch_condition(cp)
        if cond is None:
            raise Invalid(f"CARDS XML: element {d['id']}: ConditionalProperty without condition")
        if cp.findtext("IsRelevant") == "false":
            d["relevant_if"] = to_yaml(cond.item if isinstance(cond, Not) else Not(cond))
        elif cp.findtext("IsRelevant") == "true":
            d["relevant_if"] = to_yaml(cond)
        if cp.findtext("IsRequired") == "true":
            d["required_if"] = to_yaml(cond)
    return d


def _module_id(raw: str) -> str:
    """CARDS IDs such as ``Covid-19:_Chest_CT`` become PAIR ids (``covid-19-chest-ct``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", raw.strip().lower()).strip("-")
    return slug or raw


def import_xml(text: str | bytes, source: str = "CARDS XML") -> Module:
    """Parse a CARDS 2.0 document into a validated Module (precise errors on problems)."""
    if (isinstance(text, str) and "<!ENTITY" in text) or (
        isinstance(text, bytes) and b"<!ENTITY" in text
    ):
        raise Invalid(f"{source}: DTD entity declarations are not accepted.")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise Invalid(f"{source}: not well-formed XML ({exc}).") from None
    if root.tag != "ReportingModule":
        raise Invalid(f"{source}: root element must be <ReportingModule>, not <{root.tag}>.")
    meta = root.find("Metadata")
    data_elements = root.find("DataElements")
    rules = root.find("Rules/DecisionPoint")
    endpoints = root.find("EndPoints")
    if meta is None or data_elements is None or rules is None or endpoints is None:
        raise Invalid(f"{source}: needs Metadata, DataElements, Rules/DecisionPoint, EndPoints.")
    kinds = {}
    for node in data_elements:
        kind = _TAG_TYPE.get(node.tag, "")
        if kind == "computed":
            kind = node.get(f"{P}valueType") or (
                "choice" if node.find("DecisionPoint") is not None else "numeric"
            )
        kinds[node.get("Id", "")] = kind
    reader = _Reader(kinds)
    modality = next(
        (n.text or "" for n in meta.iter("ApplicableExamCategory") if n.get("Axis") == "Modality"),
        "",
    )
    module: dict[str, Any] = {
        "id": _module_id(meta.findtext("ID", "")),
        "version": meta.findtext("ModuleVersion", ""),
        "label": meta.findtext("Label", ""),
        "description": meta.findtext("Info/Description", "") or "",
        "modality": _MODALITY.get(modality, modality),
        "references": [c.text or "" for c in meta.findall("Info/References/Citation")],
        "wording": meta.get(f"{P}wording", "verified"),
        "wording_note": meta.findtext(f"{P}WordingNote", ""),
        "summary_element": meta.findtext(f"{P}SummaryElement"),
        "elements": [_element_dict(n, reader) for n in data_elements],
        "partials": {
            p.get("Id"): reader.parts(p.find("Branch") or ET.Element("Branch"))
            for p in endpoints.findall("TemplatePartial")
        },
        "rules": reader.decision(rules),
        "endpoints": [
            {
                "id": ep.get("Id"),
                "label": ep.findtext("Label", ""),
                "sections": {
                    s.get("SectionId"): reader.parts(s.find("Branch") or ET.Element("Branch"))
                    for s in ep.findall("ReportSections/ReportSection")
                },
            }
            for ep in endpoints.findall("EndPoint")
        ],
    }
    if len(module["version"].split(".")) == 2:
        module["version"] += ".0"  # CARDS modules use "1.0"
    return parse_module(module, source)
