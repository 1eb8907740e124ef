"""Load, validate, look up and export RadElement CDE sets shipped as JSON data files.

Every set, element and value carries a ``verification`` status (verified / inferred /
unassigned / local) taken from the data file, so an inferred RadElement id is never
presented as confirmed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from pair.core.errors import Invalid, NotFound

DATA_DIR = Path(__file__).parent / "data"
SCHEMA_FILE = DATA_DIR / "cde.schema.json"


@dataclass(frozen=True)
class CdeValue:
    code: str
    name: str
    element_id: str
    verification: str


@dataclass(frozen=True)
class CdeElement:
    id: str
    set_id: str
    name: str
    kind: str  # "value_set" | "integer" | "float" | "boolean"
    verification: str
    definition: str = ""
    values: tuple[CdeValue, ...] = ()
    min_cardinality: int = 1
    max_cardinality: int = 1
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def value(self, code: str) -> CdeValue:
        """The value with this code (``RDE1360.1``) or name (``present``)."""
        for v in self.values:
            if code in (v.code, v.name):
                return v
        if self.kind != "value_set":
            raise Invalid(
                f"CDE {self.id} ({self.name}) is a {self.kind} element; it has no coded values."
            )
        allowed = ", ".join(f"{v.code} ({v.name})" for v in self.values)
        raise Invalid(f"CDE {self.id} ({self.name}) has no value {code!r}; allowed: {allowed}.")


@dataclass(frozen=True)
class CdeSet:
    id: str
    name: str
    status: str
    verification: str
    version: int
    elements: tuple[CdeElement, ...]
    raw: dict[str, Any] = field(compare=False, repr=False)


def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


def validate_set_json(data: Any, source: str = "CDE set") -> None:
    """Raise ``Invalid`` listing every place where ``data`` breaks the RadElement structure."""
    validator = jsonschema.Draft7Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        problems = [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors
        ]
        raise Invalid(
            f"{source} does not match the RadElement CDE schema: " + "; ".join(problems),
            details=problems,
        )


def _element(raw: dict[str, Any], set_verification: str) -> CdeElement:
    verification = raw.get("verification", set_verification)
    common: dict[str, Any] = {
        "id": raw["id"],
        "set_id": raw["parent_set"],
        "name": raw["name"],
        "verification": verification,
        "definition": raw.get("definition", ""),
        "raw": raw,
    }
    if "value_set" in raw:
        vs = raw["value_set"]
        values = tuple(
            CdeValue(v["code"], v["name"], raw["id"], v.get("verification", verification))
            for v in vs["values"]
        )
        return CdeElement(
            kind="value_set",
            values=values,
            min_cardinality=vs["min_cardinality"],
            max_cardinality=vs["max_cardinality"],
            **common,
        )
    for key, kind in (("integer_value", "integer"), ("float_value", "float")):
        if key in raw:
            spec = raw[key]
            return CdeElement(
                kind=kind,
                minimum=spec.get("min"),
                maximum=spec.get("max"),
                unit=spec.get("unit", ""),
                **common,
            )
    return CdeElement(kind="boolean", **common)


def parse_set(data: dict[str, Any], source: str = "CDE set") -> CdeSet:
    validate_set_json(data, source)
    verification = data.get("verification", "verified")
    elements = tuple(_element(e, verification) for e in data["elements"])
    for e in elements:
        if e.set_id != data["id"]:
            raise Invalid(
                f"{source}: element {e.id} names parent_set {e.set_id!r}, not {data['id']!r}."
            )
        codes = [v.code for v in e.values]
        if any(not c.startswith(e.id + ".") for c in codes) or len(set(codes)) != len(codes):
            raise Invalid(
                f"{source}: value codes of {e.id} must be unique and start with '{e.id}.'."
            )
    return CdeSet(
        id=data["id"],
        name=data["name"],
        status=data["status"]["name"],
        verification=verification,
        version=data["set_version"]["number"],
        elements=elements,
        raw=data,
    )


class Catalog:
    """All shipped CDE sets, indexed by set id, element id and value code."""

    def __init__(self, sets: list[CdeSet]) -> None:
        self.sets: dict[str, CdeSet] = {}
        self.elements: dict[str, CdeElement] = {}
        for s in sets:
            if s.id in self.sets:
                raise Invalid(f"CDE set {s.id} is defined twice.")
            self.sets[s.id] = s
            for e in s.elements:
                if e.id in self.elements:
                    raise Invalid(
                        f"CDE element {e.id} is defined in {self.elements[e.id].set_id} and {s.id}."
                    )
                self.elements[e.id] = e

    @classmethod
    def load(cls, directory: Path = DATA_DIR) -> Catalog:
        sets = []
        for path in sorted(directory.glob("*.cdes.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise Invalid(f"{path.name}: not valid JSON ({exc}).") from exc
            sets.append(parse_set(data, path.name))
        return cls(sets)

    def set(self, set_id: str) -> CdeSet:
        try:
            return self.sets[set_id]
        except KeyError:
            raise NotFound(f"No CDE set {set_id!r}; known sets: {', '.join(self.sets)}.") from None

    def element(self, element_id: str) -> CdeElement:
        try:
            return self.elements[element_id]
        except KeyError:
            raise NotFound(
                f"No CDE element {element_id!r} in the catalog (sets: {', '.join(self.sets)})."
            ) from None

    def value(self, element_id: str, code: str) -> CdeValue:
        """Look up a value by code or name; unknown element → NotFound, unknown code → Invalid."""
        return self.element(element_id).value(code)

    def find_value(self, code: str) -> CdeValue:
        """The value with a full code such as ``RDE1360.1``."""
        element_id, _, _ = code.rpartition(".")
        if not element_id:
            raise Invalid(f"{code!r} is not a CDE value code (expected '<element id>.<n>').")
        return self.element(element_id).value(code)

    def lookup(self, identifier: str) -> dict[str, Any]:
        """API view of a set or an element, raw RadElement JSON plus verification status."""
        if identifier in self.sets:
            return self.sets[identifier].raw
        if identifier in self.elements:
            return self.elements[identifier].raw
        raise NotFound(
            f"No CDE set or element with id {identifier!r}; set ids look like "
            f"'RDES296' or 'PAIR-RDES1', element ids like 'RDE1360' or 'PAIR-RDE1'."
        )

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "id": s.id,
                "name": s.name,
                "status": s.status,
                "verification": s.verification,
                "version": s.version,
                "verification_note": s.raw.get("verification_note", ""),
                "elements": [
                    {"id": e.id, "name": e.name, "kind": e.kind, "verification": e.verification}
                    for e in s.elements
                ],
            }
            for s in self.sets.values()
        ]

    def export_set(self, set_id: str, path: Path) -> Path:
        """Write one set as RadElement JSON (what we loaded, validated again)."""
        data = self.set(set_id).raw
        validate_set_json(data, set_id)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    """The shipped catalog, loaded and validated once per process."""
    return Catalog.load()
