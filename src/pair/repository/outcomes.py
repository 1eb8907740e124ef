"""What goes into ingest and what comes out of it, per instance (every door shares these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"


@dataclass
class IngestResult:
    outcome: Outcome
    original_sop_instance_uid: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    reason: str = ""
    reason_code: str = ""
    quarantine_id: int | None = None
    burned_in_risk: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.outcome in (Outcome.STORED, Outcome.DUPLICATE)


@dataclass
class Payload:
    """One instance to ingest: Part 10 bytes as received, and a label for messages."""

    data: bytes = b""
    label: str = ""
    # its size once inflated, when already measured within the limit (STOW-RS measures every
    # part before ingesting any); None: stage one measures it
    inflated: int | None = None
