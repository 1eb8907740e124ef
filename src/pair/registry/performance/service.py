"""What the registry's pages and API read: algorithms, per-site estimates, the pooled estimate,
each site's series and the alerts, filtered by who asks.

Registry analysts and hub operators (``PERF_READ_ALL_SITES``) see every site by name. A member
facility's evaluators and admins see their own site's rows, series and alerts; of the other sites
only the pooled estimate, and that only from ``MIN_SITES_FOR_MEMBERS`` sites on (with two sites
the pooled estimate and one's own would give the other site's away).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts import policy
from pair.accounts.models import Facility
from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.core.config import Settings
from pair.core.errors import Invalid, NotFound
from pair.registry.performance import alerts as alerting
from pair.registry.performance.meta import Pooled, dersimonian_laird
from pair.registry.performance.metrics import Reading, from_scale, on_scale, spec, specs
from pair.registry.performance.models import PerfAlert, PerfFeedback

MIN_SITES_FOR_MEMBERS = 3


@dataclass
class SiteRow:
    facility_id: int
    name: str
    code: str
    mine: bool
    period: str
    value: float
    lower: float | None
    upper: float | None
    n: int | None
    pooled_in: bool
    series: list[alerting.SeriesPoint] = field(default_factory=list)


@dataclass
class PooledOut:
    k: int
    value: float
    lower: float
    upper: float
    tau2: float
    q: float
    q_p_value: float | None
    i2: float
    scale: str
    level: float


@dataclass
class Summary:
    algorithm_id: str
    algorithm_name: str
    version: str
    versions: list[str]
    metric: str
    metric_label: str
    metrics: list[str]
    threshold: alerting.Threshold | None
    all_sites: bool
    sites: list[SiteRow]
    other_sites: int  # sites reporting that this reader does not see by name
    pooled: PooledOut | None
    pooled_note: str
    alerts: list[PerfAlert]


def _read_scope(actor: Actor) -> int | None:
    """None: every site; else the reader's own facility."""
    policy.check_role(actor, Action.PERF_READ)
    if policy.may_role(actor, Action.PERF_READ_ALL_SITES):
        return None
    return actor.facility_id


def list_algorithms(session: Session, actor: Actor) -> list[dict[str, Any]]:
    """Every algorithm with feedback: versions, number of sites, latest period, alerts visible."""
    own = _read_scope(actor)
    rows = session.execute(
        select(
            PerfFeedback.algorithm_id,
            func.max(PerfFeedback.algorithm_name),
            func.count(func.distinct(PerfFeedback.algorithm_version)),
            func.count(func.distinct(PerfFeedback.facility_id)),
            func.count(PerfFeedback.id),
            func.max(PerfFeedback.period_start),
        ).group_by(PerfFeedback.algorithm_id)
    ).all()
    q = select(PerfAlert.algorithm_id, func.count(PerfAlert.id)).group_by(PerfAlert.algorithm_id)
    if own is not None:
        q = q.where(PerfAlert.facility_id == own)
    n_alerts = dict(session.execute(q).tuples().all())
    return [
        {
            "algorithm_id": a,
            "name": name or a,
            "versions": versions,
            "sites": sites,
            "feedback": count,
            "latest_period_start": latest.isoformat() if latest else None,
            "alerts": int(n_alerts.get(a, 0)),
        }
        for a, name, versions, sites, count, latest in sorted(rows)
    ]


def _versions(session: Session, algorithm_id: str) -> list[str]:
    """Versions, the one with the most recent feedback first."""
    rows = session.execute(
        select(PerfFeedback.algorithm_version, func.max(PerfFeedback.id))
        .where(PerfFeedback.algorithm_id == algorithm_id)
        .group_by(PerfFeedback.algorithm_version)
    ).all()
    return [v for v, _ in sorted(rows, key=lambda r: r[1], reverse=True)]


def _pool(latest: dict[int, Reading], metric: str) -> tuple[PooledOut | None, set[int]]:
    """DerSimonian-Laird over each site's latest reading, on the metric's scale."""
    scale = spec(metric).scale
    ys, vs, used = [], [], set()
    for fid, r in latest.items():
        point = on_scale(r, scale)
        if point is not None:
            ys.append(point[0])
            vs.append(point[1])
            used.add(fid)
    if not ys:
        return None, used
    p: Pooled = dersimonian_laird(ys, vs)
    out = PooledOut(
        p.k,
        from_scale(scale, p.estimate),
        from_scale(scale, p.lower),
        from_scale(scale, p.upper),
        p.tau2,
        p.q,
        p.q_p_value,
        p.i2,
        scale,
        p.level,
    )
    return out, used


def summary(
    session: Session,
    settings: Settings,
    actor: Actor,
    algorithm_id: str,
    version: str | None = None,
    metric: str | None = None,
) -> Summary:
    own = _read_scope(actor)
    versions = _versions(session, algorithm_id)
    if not versions:
        raise NotFound(f"No performance feedback for algorithm {algorithm_id!r}.")
    version = version or versions[0]
    if version not in versions:
        raise NotFound(f"No performance feedback for {algorithm_id} version {version}.")
    feedback = alerting.latest_per_period(session, algorithm_id, version)
    reported = {m.metric for row in feedback for m in row.metrics}
    available = [m for m in specs() if m in reported]
    threshold = alerting.threshold_for(session, algorithm_id, version)
    if metric is None:
        preferred = [threshold.primary_metric, threshold.metric] if threshold else []
        metric = next((m for m in preferred if m in available), available[0] if available else "")
    elif metric not in available:
        raise Invalid(f"metric {metric!r} is not reported for this version: {available}")
    names = {f.id: (f.name, f.code) for f in session.scalars(select(Facility))}
    by_site: dict[int, list[PerfFeedback]] = {}
    for row in feedback:
        by_site.setdefault(row.facility_id, []).append(row)
    sites: list[SiteRow] = []
    latest: dict[int, Reading] = {}
    for fid, rows in by_site.items():
        readings = [r for row in rows if (r := alerting.reading_of(row, metric)) is not None]
        if not readings:
            continue
        latest[fid] = readings[-1]
        points = alerting.series(settings, rows, metric, threshold)
        last = points[-1]
        name, code = names.get(fid, (str(fid), str(fid)))
        sites.append(
            SiteRow(
                fid,
                name,
                code,
                fid == own,
                last.period,
                last.value,
                last.lower,
                last.upper,
                last.n,
                False,
                points,
            )
        )
    pooled, used = _pool(latest, metric) if latest else (None, set())
    for s in sites:
        s.pooled_in = s.facility_id in used
    visible = sites if own is None else [s for s in sites if s.facility_id == own]
    note = ""
    if own is not None and pooled is not None and pooled.k < MIN_SITES_FOR_MEMBERS:
        pooled = None
        note = (
            f"The pooled estimate is shown to member sites from {MIN_SITES_FOR_MEMBERS} sites on."
        )
    aq = select(PerfAlert).where(
        PerfAlert.algorithm_id == algorithm_id, PerfAlert.algorithm_version == version
    )
    if own is not None:
        aq = aq.where(PerfAlert.facility_id == own)
    found_alerts = list(session.scalars(aq.order_by(PerfAlert.id.desc())))
    return Summary(
        algorithm_id,
        feedback[-1].algorithm_name or algorithm_id,
        version,
        versions,
        metric,
        spec(metric).label if metric else "",
        available,
        threshold,
        own is None,
        sorted(visible, key=lambda s: s.name),
        len(sites) - len(visible),
        pooled,
        note,
        found_alerts,
    )


def list_alerts(session: Session, actor: Actor, limit: int = 200) -> list[PerfAlert]:
    own = _read_scope(actor)
    q = select(PerfAlert).order_by(PerfAlert.id.desc()).limit(limit)
    if own is not None:
        q = q.where(PerfAlert.facility_id == own)
    return list(session.scalars(q))


def facility_names(session: Session) -> dict[int, str]:
    return {f.id: f.name for f in session.scalars(select(Facility))}
