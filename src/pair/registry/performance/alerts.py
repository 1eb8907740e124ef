"""A site's series over periods, the use case's threshold, and the alerts they raise.

The threshold is the minimum acceptable performance of the evaluation plan of the use case the
algorithm declares: the hub's own algorithm registry is asked first (its manifest's
``use_case_id``), the use case named in the feedback second; the plan is read from the hub's
use-case registry (published version), never from the feedback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.algorithms import service as algorithms
from pair.algorithms.manifest import Manifest
from pair.core.config import Settings
from pair.core.errors import Invalid, NotFound
from pair.registry.performance import drift
from pair.registry.performance.metrics import Reading, on_scale, spec, specs, to_scale
from pair.registry.performance.models import PerfAlert, PerfFeedback
from pair.usecases.service import in_force


@dataclass(frozen=True)
class Threshold:
    use_case: str  # "id@version"
    primary_metric: str
    metric: str
    value: float
    bound: str  # "ci_lower" or "point"


@dataclass(frozen=True)
class SeriesPoint:
    period: str
    value: float
    lower: float | None
    upper: float | None
    n: int | None
    cusum: float | None
    cusum_alarm: bool
    below_minimum: bool


def declared_use_case(session: Session, algorithm_id: str, version: str) -> str | None:
    """The use case the hub's algorithm registry says this version declares (None: unknown)."""
    try:
        row = algorithms.get_algorithm(session, algorithm_id, version)
    except NotFound:
        return None
    return Manifest.model_validate(row.manifest).use_case_id


def named_in_feedback(session: Session, algorithm_id: str, version: str) -> str | None:
    """The use case the newest feedback of this version names (the version's, not a site's)."""
    return session.scalar(
        select(PerfFeedback.use_case_id)
        .where(
            PerfFeedback.algorithm_id == algorithm_id,
            PerfFeedback.algorithm_version == version,
            PerfFeedback.use_case_id.is_not(None),
        )
        .order_by(PerfFeedback.id.desc())
        .limit(1)
    )


def threshold_for(session: Session, algorithm_id: str, version: str) -> Threshold | None:
    """The plan's minimum for this algorithm version (None: no published use case)."""
    uc_id = declared_use_case(session, algorithm_id, version) or named_in_feedback(
        session, algorithm_id, version
    )
    if not uc_id:
        return None
    try:
        uc = in_force(session, uc_id)
    except Invalid:  # retired: no plan in force
        return None
    if uc is None:
        return None
    plan = uc.document["evaluation_plan"]
    minimum = plan["minimum_performance"]
    return Threshold(
        uc.ref,
        str(plan["primary_metric"]),
        str(minimum["metric"]),
        float(minimum["value"]),
        str(minimum.get("bound", "ci_lower")),
    )


def latest_per_period(
    session: Session, algorithm_id: str, version: str, facility_id: int | None = None
) -> list[PerfFeedback]:
    """Per site and period the feedback the site created last (a re-run replaces the earlier
    one), ordered by period."""
    q = select(PerfFeedback).where(
        PerfFeedback.algorithm_id == algorithm_id, PerfFeedback.algorithm_version == version
    )
    if facility_id is not None:
        q = q.where(PerfFeedback.facility_id == facility_id)
    latest: dict[tuple[int, str], PerfFeedback] = {}
    for row in session.scalars(q.order_by(PerfFeedback.site_created_at, PerfFeedback.id)):
        latest[(row.facility_id, row.period)] = row
    return sorted(latest.values(), key=lambda r: (r.period_start, r.facility_id))


def reading_of(row: PerfFeedback, metric: str) -> Reading | None:
    for m in row.metrics:
        if m.metric == metric:
            return Reading(m.metric, m.value, m.lower, m.upper, m.level, m.n, m.events)
    return None


def series(
    settings: Settings, rows: list[PerfFeedback], metric: str, threshold: Threshold | None
) -> list[SeriesPoint]:
    """One site's periods for ``metric`` with the CUSUM against the threshold (when the
    threshold is on this metric)."""
    scale = spec(metric).scale
    found = [(row.period, r) for row in rows if (r := reading_of(row, metric)) is not None]
    checks = threshold is not None and threshold.metric == metric
    cusum: list[drift.CusumPoint] = []
    if checks and threshold is not None:
        ys, ses = [], []
        for _, r in found:
            pair = on_scale(r, scale)
            ys.append(to_scale(scale, r.value))
            ses.append(math.sqrt(pair[1]) if pair else math.nan)
        cusum = drift.lower_cusum(
            ys,
            ses,
            to_scale(scale, threshold.value),
            settings.perf_cusum_k,
            settings.perf_cusum_h,
        )
    return [
        SeriesPoint(
            period,
            r.value,
            r.lower,
            r.upper,
            r.n,
            cusum[i].statistic if cusum else None,
            cusum[i].alarm if cusum else False,
            checks
            and threshold is not None
            and drift.below_minimum(r.value, r.lower, threshold.value, threshold.bound),
        )
        for i, (period, r) in enumerate(found)
    ]


def refresh(
    session: Session, settings: Settings, algorithm_id: str, version: str, facility_id: int
) -> list[PerfAlert]:
    """Add the alerts this site's series raises now (earlier alerts stay: they are a record)."""
    rows = latest_per_period(session, algorithm_id, version, facility_id)
    if not rows:
        return []
    threshold = threshold_for(session, algorithm_id, version)
    if threshold is None or threshold.metric not in specs():
        return []  # no plan in force, or a metric local evaluation does not report
    label = spec(threshold.metric).label
    have = {
        (a.period, a.kind)
        for a in session.scalars(
            select(PerfAlert).where(
                PerfAlert.algorithm_id == algorithm_id,
                PerfAlert.algorithm_version == version,
                PerfAlert.facility_id == facility_id,
                PerfAlert.metric == threshold.metric,
            )
        )
    }
    rule = "lower 95% bound" if threshold.bound == "ci_lower" else "estimate"
    added = []
    for p in series(settings, rows, threshold.metric, threshold):
        raised = []
        if p.below_minimum:
            shown = p.lower if threshold.bound == "ci_lower" and p.lower is not None else p.value
            raised.append(
                (
                    "below_minimum",
                    shown,
                    f"{label} {rule} {shown:.3f} is below the minimum {threshold.value:g} "
                    f"of {threshold.use_case}",
                )
            )
        if p.cusum_alarm and p.cusum is not None:
            raised.append(
                (
                    "cusum",
                    p.value,
                    f"lower CUSUM {p.cusum:.2f} > h = {settings.perf_cusum_h:g}: {label} "
                    f"has drifted below the minimum {threshold.value:g} of {threshold.use_case}",
                )
            )
        for kind, value, message in raised:
            if (p.period, kind) in have:
                continue
            alert = PerfAlert(
                algorithm_id=algorithm_id,
                algorithm_version=version,
                facility_id=facility_id,
                metric=threshold.metric,
                period=p.period,
                kind=kind,
                value=float(value),
                threshold=threshold.value,
                use_case=threshold.use_case,
                message=message[:500],
            )
            session.add(alert)
            added.append(alert)
    session.flush()
    return added
