"""Data-quality report per site: missing required elements, out-of-range values, inconsistent
dates, late submissions and quarantine rates. The rules live in ``data/quality.yaml``
(versioned); ranges and allowed values come from the clinical data dictionary.

Each finding carries a count and a few example studies (hub UIDs and pseudonyms only), so a site
can find and fix the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.accounts.policy import Action, check_role
from pair.audit.service import Actor, record
from pair.clinical.dictionary import load_dictionary
from pair.registry.cohort import CohortQuery, CohortStudy, select_studies
from pair.repository.models import Instance, QuarantineItem, Series, Study

RULES_FILE = Path(__file__).parent / "data" / "quality.yaml"
EXAMPLES = 5


@lru_cache(maxsize=1)
def rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    known = set(load_dictionary().names)
    named = list(data["required"]["clinical"])
    named += [n for pair in data["date_order"] for n in (pair["earlier"], pair["later"])]
    unknown = [n for n in named if n not in known]
    if unknown:  # the rules file and the dictionary must agree (checked by a test)
        raise ValueError(f"{RULES_FILE.name}: unknown clinical fields {unknown}")
    return data


@dataclass
class Finding:
    check: str  # missing | out-of-range | inconsistent-date | late-submission
    element: str
    label: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, s: CohortStudy) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{s.pseudonym} {s.study_uid}")


@dataclass
class SiteQuality:
    code: str
    name: str
    studies: int
    instances: int
    quarantined: int
    findings: list[Finding]

    @property
    def quarantine_rate(self) -> float | None:
        received = self.instances + self.quarantined
        return self.quarantined / received if received else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.code,
            "name": self.name,
            "studies": self.studies,
            "instances": self.instances,
            "quarantined": self.quarantined,
            "quarantine_rate": self.quarantine_rate,
            "findings": [vars(f) for f in self.findings],
        }


def _study_date(value: str) -> date | None:
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        return None


def _check_study(
    s: CohortStudy, found: dict[tuple[str, str], Finding], today: date, late_days: int
) -> None:
    d = load_dictionary()
    r = rules()

    def hit(check: str, element: str, label: str) -> None:
        found.setdefault((check, element), Finding(check, element, label)).add(s)

    for name in r["required"]["clinical"]:
        fd = d.get(name)
        if s.clinical.get(name) is None:
            hit("missing", name, f"{fd.label if fd else name} missing")
    if not s.study_date:
        hit("missing", "study_date", "Study date missing")
    if not s.modalities:
        hit("missing", "modalities", "Modality missing")
    for f in d.fields:
        v = s.clinical.get(f.name)
        if v is None:
            continue
        if f.type == "integer":
            bad = not isinstance(v, int) or isinstance(v, bool)
            bad = bad or (f.min is not None and v < f.min) or (f.max is not None and v > f.max)
        elif f.type == "enum":
            bad = v not in f.values
        else:
            bad = not isinstance(v, bool)
        if bad:
            hit("out-of-range", f.name, f"{f.label}: value outside the dictionary's range/values")
    for pair in r["date_order"]:
        a, b = s.clinical.get(pair["earlier"]), s.clinical.get(pair["later"])
        if isinstance(a, int) and isinstance(b, int) and a > b:
            hit("inconsistent-date", f"{pair['earlier']}>{pair['later']}", pair["label"])
    studied = _study_date(s.study_date)
    if s.study_date and studied is None:
        hit("out-of-range", "study_date", "Study date is not a valid date")
    if studied is None:
        return
    received = s.submitted_at if s.submitted_at.tzinfo else s.submitted_at.replace(tzinfo=UTC)
    if studied > today or studied > received.date():
        hit("inconsistent-date", "study_date", "Study date in the future (after receipt)")
    elif (received.date() - studied).days > late_days:
        hit(
            "late-submission",
            "submitted_at",
            f"Received more than {late_days} days after the study date",
        )


def quality_report(
    session: Session, actor: Actor, late_days: int, *, today: date | None = None
) -> list[SiteQuality]:
    """Every site for registry analysts and the hub operator; a facility admin or data manager
    gets its own site only (``REGISTRY_QUALITY``)."""
    check_role(actor, Action.REGISTRY_QUALITY)
    readers = ("registry-analyst", "hub-operator")
    own = None if actor.role in readers or actor.user_id is None else actor.facility_id
    today = today or datetime.now(UTC).date()
    facilities = list(session.scalars(select(Facility).order_by(Facility.code)))
    if own is not None:
        facilities = [f for f in facilities if f.id == own]
    q = CohortQuery(sites=[f.code for f in facilities]) if own is not None else CohortQuery()
    per_site: dict[int, list[CohortStudy]] = {}
    for s in select_studies(session, q):
        per_site.setdefault(s.facility_id, []).append(s)
    instances = dict(
        session.execute(
            select(Study.facility_id, func.count(Instance.id))
            .join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
            .group_by(Study.facility_id)
        ).all()
    )
    quarantined = dict(
        session.execute(
            select(QuarantineItem.facility_id, func.count(QuarantineItem.id)).group_by(
                QuarantineItem.facility_id
            )
        ).all()
    )
    report = []
    for f in facilities:
        found: dict[tuple[str, str], Finding] = {}
        for s in per_site.get(f.id, []):
            _check_study(s, found, today, late_days)
        report.append(
            SiteQuality(
                f.code,
                f.name,
                len(per_site.get(f.id, [])),
                int(instances.get(f.id, 0)),
                int(quarantined.get(f.id, 0)),
                sorted(found.values(), key=lambda x: (x.check, x.element)),
            )
        )
    record(session, actor, "registry.quality", "registry", "", detail={"sites": len(report)})
    return report
