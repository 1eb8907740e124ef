"""The clinical data dictionary (``data/dictionary.yaml``) and the rules derived from it.

Nothing else in the code names clinical fields: validation, forms, CSV columns, search filters
and the API's JSON schema all come from the loaded :class:`Dictionary`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

DICTIONARY_PATH = Path(__file__).parent / "data" / "dictionary.yaml"
_INT_RE = re.compile(r"^[+-]?\d+$")
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}

Value = str | int | bool | None


@dataclass(frozen=True)
class FieldError:
    """One broken rule: which field, which rule, the offending value and what is allowed."""

    field: str
    rule: str
    value: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "field": self.field,
            "rule": self.rule,
            "value": self.value,
            "message": self.message,
        }


@dataclass(frozen=True)
class FieldDef:
    name: str
    label: str
    type: str  # enum | integer | boolean
    node: str = "case"
    values: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    unit: str = ""
    description: str = ""
    date_column: str | None = None
    not_before: str | None = None
    top_code: dict[str, Any] | None = None
    search: bool = False
    synonyms: dict[str, str] = field(default_factory=dict)

    def coerce(self, raw: Any) -> tuple[Value, FieldError | None]:
        """Parse a value from JSON, a form or a CSV cell; '' and None mean 'not recorded'."""
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            return None, None
        shown = str(raw)
        if self.type == "integer":
            if isinstance(raw, bool) or not (
                isinstance(raw, int) or (isinstance(raw, str) and _INT_RE.match(raw.strip()))
            ):
                return None, FieldError(
                    self.name,
                    "integer",
                    shown,
                    f"{self.label} must be a "
                    "whole number" + (f" of {self.unit}" if self.unit else ""),
                )
            return int(raw), None
        if self.type == "boolean":
            if isinstance(raw, bool):
                return raw, None
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True, None
            if text in _FALSE:
                return False, None
            return None, FieldError(
                self.name, "boolean", shown, f"{self.label} must be true or false (yes/no, 1/0)"
            )
        text = str(raw).strip()
        for allowed in self.values:
            if text.lower() == allowed.lower():
                return allowed, None
        for synonym, allowed in self.synonyms.items():
            if text.lower() == synonym.lower():
                return allowed, None
        return None, FieldError(
            self.name, "enum", shown, f"{self.label} must be one of: {', '.join(self.values)}"
        )

    def check_range(self, value: Value) -> FieldError | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        if self.min is not None and value < self.min:
            return FieldError(self.name, "min", str(value), f"{self.label} must be ≥ {self.min}")
        if self.max is not None and value > self.max:
            return FieldError(self.name, "max", str(value), f"{self.label} must be ≤ {self.max}")
        return None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"title": self.label, "description": self.description}
        if self.type == "enum":
            schema["anyOf"] = [{"type": "string", "enum": list(self.values)}, {"type": "null"}]
        elif self.type == "integer":
            schema["type"] = ["integer", "null"]
            if self.min is not None:
                schema["minimum"] = self.min
            if self.max is not None and not self.top_code:
                schema["maximum"] = self.max
        else:
            schema["type"] = ["boolean", "null"]
        return schema


@dataclass(frozen=True)
class AgeBand:
    label: str
    min: int
    max: int


@dataclass(frozen=True)
class Dictionary:
    name: str
    version: str
    fields: tuple[FieldDef, ...]
    index_date_column: str
    csv_keys: dict[str, str]
    age_bands: tuple[AgeBand, ...] = field(default=())
    csv_site_column: str = ""
    csv_aliases: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def get(self, name: str) -> FieldDef | None:
        return next((f for f in self.fields if f.name == name), None)

    def field_by_flag(self) -> dict[str, FieldDef]:
        """Flag field name -> the top-coded field that sets it (e.g. age_at_index_gt89)."""
        return {f.top_code["flag"]: f for f in self.fields if f.top_code}

    def date_columns(self) -> dict[str, FieldDef]:
        return {f.date_column: f for f in self.fields if f.date_column}

    def csv_columns(self) -> list[str]:
        """Every column a CSV may have: keys, index date, field names, date alternatives."""
        site = [self.csv_site_column] if self.csv_site_column else []
        return [
            *self.csv_keys,
            *site,
            self.index_date_column,
            *self.names,
            *self.date_columns(),
            *self.csv_aliases,
        ]

    def empty_record(self) -> dict[str, Value]:
        return dict.fromkeys(self.names)

    def validate(self, raw: dict[str, Any]) -> tuple[dict[str, Value], list[FieldError]]:
        """Coerce and check a whole record; returns the normalised record and every error."""
        errors: list[FieldError] = []
        record = self.empty_record()
        for key in raw:
            if key not in record:
                errors.append(
                    FieldError(
                        key, "unknown_field", "", "Unknown field; allowed: " + ", ".join(self.names)
                    )
                )
        for f in self.fields:
            value, error = f.coerce(raw.get(f.name))
            if error:
                errors.append(error)
                continue
            record[f.name] = value
        for f in self.fields:  # top-coding (e.g. ages above 89) before range checks
            value = record[f.name]
            if f.top_code and isinstance(value, int) and value > int(f.top_code["above"]):
                record[f.name] = int(f.top_code["store"])
                record[f.top_code["flag"]] = "Yes"
            elif f.top_code and isinstance(value, int) and record[f.top_code["flag"]] is None:
                record[f.top_code["flag"]] = "No"
        for f in self.fields:
            error = f.check_range(record[f.name])
            if error:
                errors.append(error)
            before = f.not_before
            value, other_value = record[f.name], record[before] if before else None
            if (
                before
                and isinstance(value, int)
                and isinstance(other_value, int)
                and value < other_value
            ):
                other = self.get(before)
                errors.append(
                    FieldError(
                        f.name,
                        "not_before",
                        str(value),
                        f"{f.label} cannot be before {other.label if other else before} "
                        f"({other_value})",
                    )
                )
        for flag, f in self.field_by_flag().items():
            store = int((f.top_code or {})["store"])
            if (
                record[flag] == "Yes"
                and isinstance(record[f.name], int)
                and record[f.name] != store
            ):
                errors.append(
                    FieldError(
                        flag, "top_code", "Yes", f"{f.label} must be {store} when the flag is Yes"
                    )
                )
        return record, errors

    def json_schema(self) -> dict[str, Any]:
        return {
            "title": f"{self.name} v{self.version}",
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: f.json_schema() for f in self.fields},
        }

    def age_band(self, label: str) -> AgeBand | None:
        return next((b for b in self.age_bands if b.label == label), None)


def parse_date(text: str) -> date | None:
    """ISO (2020-03-14) or DICOM (20200314) dates; None when unparseable."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{8}", text):
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        return date.fromisoformat(text)
    except ValueError:
        return None


@lru_cache(maxsize=1)
def load_dictionary(path: Path = DICTIONARY_PATH) -> Dictionary:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    fields = tuple(
        FieldDef(
            name=f["name"],
            label=f.get("label", f["name"]),
            type=f["type"],
            node=f.get("node", "case"),
            values=tuple(str(v) for v in f.get("values", ())),
            min=f.get("min"),
            max=f.get("max"),
            unit=f.get("unit", ""),
            description=f.get("description", ""),
            date_column=f.get("date_column"),
            not_before=f.get("not_before"),
            top_code=f.get("top_code"),
            search=bool(f.get("search", False)),
            synonyms={str(k): str(v) for k, v in f.get("synonyms", {}).items()},
        )
        for f in raw["fields"]
    )
    return Dictionary(
        name=raw["name"],
        version=str(raw["version"]),
        fields=fields,
        index_date_column=raw["index_date_column"],
        csv_keys=dict(raw["csv_keys"]),
        csv_site_column=str(raw.get("csv_site_column", "")),
        csv_aliases=dict(raw.get("csv_aliases", {})),
        age_bands=tuple(AgeBand(b["label"], b["min"], b["max"]) for b in raw.get("age_bands", ())),
    )
