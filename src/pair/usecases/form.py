"""The authoring form, built from the use-case JSON Schema: one input per scalar field.

Strings are text inputs (long text: a textarea), enums are selects, numbers are number inputs,
arrays of scalars are a textarea with one item per line, and arrays of objects (outputs) or
anything else the walker does not break down are a small YAML textarea. A new schema version
changes the form without template edits. Problems from the validator (``path: message``) are
shown next to the field whose path they start with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from pair.core.errors import Invalid
from pair.usecases.spec import schema

LONG_TEXT = 200  # strings allowed to be longer than this get a textarea
_REQUIRED = re.compile(r"^'([^']+)' is a required property")


@dataclass
class Field:
    path: tuple[str, ...]
    kind: str  # text | textarea | select | number | integer | lines | yaml
    label: str
    required: bool
    help: str = ""
    options: list[str] = field(default_factory=list)
    item_kind: str = "text"  # lines: how each line is read (text | number | integer)

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def dom_id(self) -> str:
        return "f-" + "-".join(self.path)


@dataclass
class Section:
    key: str
    title: str
    help: str
    fields: list[Field]


def _resolve(spec: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = spec.get("$ref")
    if ref:
        return {**defs[ref.rsplit("/", 1)[-1]], **{k: v for k, v in spec.items() if k != "$ref"}}
    return spec


def _scalar_kind(spec: dict[str, Any]) -> str | None:
    if "enum" in spec:
        return "select"
    t = spec.get("type")
    if t == "string":
        return "textarea" if spec.get("maxLength", 0) > LONG_TEXT else "text"
    if t in ("number", "integer"):
        return str(t)
    return None


def _walk(
    path: tuple[str, ...], spec: dict[str, Any], required: bool, defs: dict[str, Any]
) -> list[Field]:
    spec = _resolve(spec, defs)
    label = path[-1].replace("_", " ")
    desc = str(spec.get("description", ""))
    if desc.startswith("Set by the node"):
        return []
    kind = _scalar_kind(spec)
    if kind is not None:
        return [Field(path, kind, label, required, desc, [str(o) for o in spec.get("enum", [])])]
    if spec.get("type") == "object" and "properties" in spec:
        need = set(spec.get("required", []))
        out: list[Field] = []
        for key, sub in spec["properties"].items():
            out += _walk((*path, key), sub, required and key in need, defs)
        return out
    if spec.get("type") == "array":
        items = _resolve(spec.get("items", {}), defs)
        item = _scalar_kind(items)
        if item is not None:
            item_kind = item if item in ("number", "integer") else "text"
            help_ = desc or "One per line."
            if item == "select":
                help_ = "One per line, from: " + ", ".join(str(o) for o in items["enum"])
            return [Field(path, "lines", label, required, help_, item_kind=item_kind)]
    return [Field(path, "yaml", label, required, desc or "YAML (or JSON).")]


def sections() -> list[Section]:
    """The form's sections, one per top-level property of the schema but the version marker."""
    s = schema()
    defs = s.get("definitions", {})
    need = set(s["required"])
    return [
        Section(
            key,
            key.replace("_", " ").capitalize(),
            str(spec.get("description", "")),
            _walk((key,), spec, key in need, defs),
        )
        for key, spec in s["properties"].items()
        if key != "schema_version"
    ]


def all_fields() -> list[Field]:
    return [f for sec in sections() for f in sec.fields]


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def values(document: dict[str, Any]) -> dict[str, str]:
    """The form's text for each field of a stored document."""
    out: dict[str, str] = {}
    for f in all_fields():
        v = _get(document, f.path)
        if v is None:
            out[f.name] = ""
        elif f.kind == "lines" and isinstance(v, list):
            out[f.name] = "\n".join(str(x) for x in v)
        elif f.kind == "yaml":
            out[f.name] = yaml.safe_dump(v, sort_keys=False, allow_unicode=True, width=100)
        else:
            out[f.name] = str(v)
    return out


def _number(f: Field, text: str, kind: str) -> int | float:
    try:
        return int(text) if kind == "integer" else float(text)
    except ValueError:
        what = "an integer" if kind == "integer" else "a number"
        raise ValueError(f"{'/'.join(f.path)}: {text!r} is not {what}") from None


def _parse(f: Field, text: str) -> Any:
    if f.kind in ("number", "integer"):
        return _number(f, text, f.kind)
    if f.kind == "lines":
        items = [line.strip() for line in text.splitlines() if line.strip()]
        if f.item_kind == "text":
            return items
        return [_number(f, x, f.item_kind) for x in items]
    if f.kind == "yaml":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ValueError(f"{'/'.join(f.path)}: not valid YAML{where}") from None
    return text


def document(raw: dict[str, str]) -> dict[str, Any]:
    """The use case the form describes; empty fields are left out (the schema says if they may)."""
    doc: dict[str, Any] = {"schema_version": 1}
    problems: list[str] = []
    for f in all_fields():
        text = raw.get(f.name, "").strip()
        if not text:
            continue
        try:
            value = _parse(f, text)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        node = doc
        for key in f.path[:-1]:
            node = node.setdefault(key, {})
        node[f.path[-1]] = value
    for sec in sections():
        doc.setdefault(sec.key, [] if sec.fields and sec.fields[0].path == (sec.key,) else {})
    if problems:
        raise Invalid(f"{len(problems)} field(s) could not be read.", details=problems)
    return doc


def field_errors(problems: list[str]) -> dict[str, list[str]]:
    """Validator problems (``a/b/0/c: message``) per form field (longest matching path)."""
    names = {f.path: f.name for f in all_fields()}
    out: dict[str, list[str]] = {}
    for p in problems:
        where, _, message = p.partition(": ")
        parts = tuple(x for x in where.split("/") if x and x != "(root)")
        m = _REQUIRED.match(message)
        if m:
            parts = (*parts, m.group(1))
        for n in range(len(parts), 0, -1):
            if parts[:n] in names:
                out.setdefault(names[parts[:n]], []).append(p)
                break
    return out
