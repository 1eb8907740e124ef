"""A use case document: JSON Schema structure first, then every output checked against the CDE
catalog, so an unknown element or value code is named precisely (``path: problem``).

``UseCase.from_dict`` is the only way to build one; an instance is always valid (highdicom
style: the constructor refuses what it cannot stand behind).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pair.cde.catalog import Catalog, catalog
from pair.core.errors import Invalid

DATA_DIR = Path(__file__).parent / "data"
SCHEMA_FILE = DATA_DIR / "usecase.schema.json"
SHIPPED_DIR = DATA_DIR / "shipped"
SCHEMA_VERSION = 1
# data_type of an output → CDE element kinds it may bind to
_KINDS = {
    "binary": {"value_set", "boolean"},
    "ordinal": {"value_set"},
    "nominal": {"value_set"},
    "continuous": {"float", "integer"},
    "integer": {"integer"},
}


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class Output:
    cde_element: str
    data_type: str
    value_set: tuple[str, ...]
    positive_value: str | None
    primary: bool


@dataclass(frozen=True)
class UseCase:
    id: str
    title: str
    version: int
    modalities: tuple[str, ...]
    body_region: str
    outputs: tuple[Output, ...]
    document: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Any, source: str = "use case", cdes: Catalog | None = None) -> UseCase:
        """Validate ``data``; raise ``Invalid`` whose ``details`` list every problem."""
        problems = structure_problems(data)
        if not problems:
            problems = cde_problems(data, cdes or catalog())
        if problems:
            raise Invalid(
                f"{source} is not a valid use case: " + "; ".join(problems), details=problems
            )
        tech = data["technical_specifications"]
        outputs = tuple(
            Output(
                o["cde_element"],
                o["data_type"],
                tuple(o.get("value_set", ())),
                o.get("positive_value"),
                key == "primary_outputs",
            )
            for key in ("primary_outputs", "secondary_outputs")
            for o in tech.get(key, [])
        )
        return cls(
            id=data["overview"]["id"],
            title=data["overview"]["title"],
            version=int(data["overview"].get("version", 1)),
            modalities=tuple(tech["inputs"]["modalities"]),
            body_region=tech["inputs"]["body_region"],
            outputs=outputs,
            document=data,
        )

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def output(self, element_id: str) -> Output | None:
        return next((o for o in self.outputs if o.cde_element == element_id), None)


def structure_problems(data: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def cde_problems(data: dict[str, Any], cdes: Catalog) -> list[str]:
    """Outputs must name catalog elements, values of those elements, and a coherent type."""
    problems: list[str] = []
    tech = data["technical_specifications"]
    seen: set[str] = set()
    for key in ("primary_outputs", "secondary_outputs"):
        for i, out in enumerate(tech.get(key, [])):
            where = f"technical_specifications/{key}/{i}"
            eid = out["cde_element"]
            if eid in seen:
                problems.append(f"{where}/cde_element: {eid} is listed twice")
            seen.add(eid)
            element = cdes.elements.get(eid)
            if element is None:
                problems.append(f"{where}/cde_element: {eid} is not in the CDE catalog")
                continue
            if element.kind not in _KINDS[out["data_type"]]:
                problems.append(
                    f"{where}/data_type: {out['data_type']!r} cannot bind {eid} "
                    f"({element.name}), a {element.kind} element"
                )
            codes = {v.code for v in element.values}
            values = out.get("value_set", [])
            if element.kind == "value_set" and not values:
                problems.append(f"{where}/value_set: {eid} is coded; list the values used")
            if element.kind != "value_set" and values:
                problems.append(f"{where}/value_set: {eid} is a {element.kind} element; no codes")
            for j, code in enumerate(values):
                if code not in codes:
                    allowed = ", ".join(sorted(codes))
                    problems.append(
                        f"{where}/value_set/{j}: {code!r} is not a value of {eid} "
                        f"({element.name}); allowed: {allowed}"
                    )
            pos = out.get("positive_value")
            if pos is not None and pos not in values:
                problems.append(f"{where}/positive_value: {pos!r} is not in its value_set")
            if out["data_type"] == "binary" and element.kind == "value_set" and pos is None:
                problems.append(f"{where}/positive_value: a binary output names its positive value")
    return problems


def load_file(path: Path) -> UseCase:
    """A use case from a YAML or JSON data file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise Invalid(f"{path.name}: not valid YAML/JSON ({exc}).") from exc
    return UseCase.from_dict(data, path.name)


def shipped() -> list[UseCase]:
    """The use cases the node ships, from ``data/shipped``."""
    return [load_file(p) for p in sorted(SHIPPED_DIR.glob("*.yaml"))]
