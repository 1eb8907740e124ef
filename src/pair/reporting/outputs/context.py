"""What every output needs: the study it reports on, who signed it, and the evaluation's
values resolved to CDE codes (with their verification status)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from pair.cde.catalog import catalog
from pair.reporting.engine import Evaluation, format_value
from pair.reporting.model import Module

CODING_FILE = Path(__file__).resolve().parents[1] / "data" / "coding.yaml"


@lru_cache(maxsize=1)
def coding() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CODING_FILE.read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class EvidenceInstance:
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str = ""


@dataclass(frozen=True)
class Suggestion:
    """An AI-proposed value and its provenance; ``outcome`` is set when the report is signed."""

    element: str
    value: Any
    algorithm: str
    version: str
    outcome: str = ""  # accepted | changed | rejected


@dataclass
class ReportContext:
    """The study and the report record around an evaluation (de-identified values only)."""

    study_uid: str
    patient_id: str  # the pseudonym
    report_id: str = "draft"
    version: int = 1
    status: str = "draft"  # draft | final | amended
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    referring_physician_name: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    modality: str = ""
    facility: str = ""
    author: str = ""
    signed_at: datetime | None = None
    evidence: list[EvidenceInstance] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.signed_at is not None and self.signed_at.tzinfo is None:
            self.signed_at = self.signed_at.replace(tzinfo=UTC)  # SQLite drops the zone

    @property
    def when(self) -> datetime:
        return self.signed_at or datetime.now(UTC)


@dataclass(frozen=True)
class CodedObservation:
    """One element's value with its CDE and value codes (multichoice: one code per value)."""

    element: str
    label: str
    cde_id: str
    cde_name: str
    cde_system: str  # "radelement" | "pair"
    verification: str
    kind: str
    value: Any
    display: str
    codes: tuple[tuple[str, str, str], ...] = ()  # (code, name, verification)
    unit: str = ""
    computed: bool = False


def _system(cde_id: str) -> str:
    return "pair" if cde_id.startswith("PAIR-") else "radelement"


def coded_observations(module: Module, ev: Evaluation) -> list[CodedObservation]:
    """Coded values in module order; uncoded report options (tags, free text) are left out."""
    cat = catalog()
    out = []
    values = ev.all_values
    for el in module.elements:
        if not el.coded or el.cde is None or el.id not in values:
            continue
        value = values[el.id]
        cde = cat.element(el.cde)
        codes: list[tuple[str, str, str]] = []
        chosen = value if isinstance(value, list) else [value]
        if el.kind in ("choice", "multichoice"):
            for v in chosen:
                ch = el.choice(v)
                if ch is not None and ch.cde:
                    cv = cat.find_value(ch.cde)
                    codes.append((cv.code, cv.name, cv.verification))
        out.append(
            CodedObservation(
                element=el.id,
                label=el.label,
                cde_id=cde.id,
                cde_name=cde.name,
                cde_system=_system(cde.id),
                verification=cde.verification,
                kind=el.kind,
                value=value,
                display=format_value(el, value),
                codes=tuple(codes),
                unit=el.unit or cde.unit,
                computed=not el.is_input,
            )
        )
    return out
