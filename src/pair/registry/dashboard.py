"""Registry dashboards: aggregates over every site and their plots, rendered on the server as
inline SVG with matplotlib (as the evaluation reports' figures are), so no script is needed.

Positivity carries a Wilson 95% interval (``pair.evaluation.stats.proportions.wilson_ci``).
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts.policy import Action, check_role
from pair.audit.service import Actor, record
from pair.clinical.dictionary import load_dictionary
from pair.evaluation.stats.proportions import wilson_ci
from pair.registry.cohort import CohortQuery, CohortStudy, select_studies
from pair.repository.models import Series, Study


@dataclass
class Positivity:
    site: str
    positive: int
    tested: int  # Yes + No (Indeterminate and Not Reported excluded)
    low: float
    high: float

    @property
    def rate(self) -> float | None:
        return self.positive / self.tested if self.tested else None


@dataclass
class Dashboard:
    studies: int
    sites: list[str]
    over_time: dict[str, dict[str, int]]  # site -> month (YYYY-MM) -> studies
    positivity: list[Positivity]
    categories: dict[str, int]
    demographics: dict[str, dict[str, int]]  # age band -> sex -> patients
    modality_vendor: dict[str, int]  # "CT / Vendor" -> series

    def to_dict(self) -> dict[str, Any]:
        return {
            "studies": self.studies,
            "sites": self.sites,
            "over_time": self.over_time,
            "positivity": [{**vars(p), "rate": p.rate} for p in self.positivity],
            "categories": self.categories,
            "demographics": self.demographics,
            "modality_vendor": self.modality_vendor,
        }


def _age_band(age: Any) -> str:
    if not isinstance(age, int) or isinstance(age, bool):
        return "unknown"
    band = next((b for b in load_dictionary().age_bands if b.min <= age < b.max), None)
    return band.label if band else "unknown"


def build(session: Session, studies: list[CohortStudy]) -> Dashboard:
    sites = sorted({s.site for s in studies})
    over: dict[str, Counter[str]] = {site: Counter() for site in sites}
    for s in studies:
        if len(s.study_date) == 8:
            over[s.site][f"{s.study_date[:4]}-{s.study_date[4:6]}"] += 1
    patients: dict[int, CohortStudy] = {s.patient_pk: s for s in studies}
    positivity = []
    for site in sites:
        status = Counter(
            str(p.clinical.get("covid19_positive")) for p in patients.values() if p.site == site
        )
        pos, tested = status["Yes"], status["Yes"] + status["No"]
        low, high = wilson_ci(pos, tested) if tested else (float("nan"), float("nan"))
        positivity.append(Positivity(site, pos, tested, low, high))
    demo: dict[str, Counter[str]] = {}
    for p in patients.values():
        band = _age_band(p.clinical.get("age_at_index"))
        demo.setdefault(band, Counter())[str(p.clinical.get("sex") or "unknown")] += 1
    order = [b.label for b in load_dictionary().age_bands] + ["unknown"]
    pks = [s.study_pk for s in studies]
    vendor: Counter[str] = Counter()
    for start in range(0, len(pks), 500):
        for modality, maker, n in session.execute(
            select(Series.modality, Series.manufacturer, func.count(Series.id))
            .join(Study, Study.id == Series.study_pk)
            .where(Study.id.in_(pks[start : start + 500]))
            .group_by(Series.modality, Series.manufacturer)
        ):
            vendor[f"{modality or '?'} / {maker or 'unknown'}"] += n
    return Dashboard(
        studies=len(studies),
        sites=sites,
        over_time={site: dict(sorted(c.items())) for site, c in over.items()},
        positivity=positivity,
        categories=dict(
            sorted(Counter(f"{m}: {c}" for s in studies for m, c in s.categories.items()).items())
        ),
        demographics={b: dict(sorted(demo[b].items())) for b in order if b in demo},
        modality_vendor=dict(vendor.most_common()),
    )


def dashboard(session: Session, actor: Actor, q: CohortQuery | None = None) -> Dashboard:
    """Aggregates only: open to every registry reader, facility users included."""
    check_role(actor, Action.REGISTRY_VIEW)
    d = build(session, select_studies(session, q or CohortQuery()))
    record(session, actor, "registry.dashboard", "registry", "", detail={"studies": d.studies})
    return d


# ---- plots -----------------------------------------------------------------------------------


def _svg(fig: Figure, title: str) -> str:
    """A ``data:`` URL of the SVG: shown by ``<img>`` under the portal's CSP (no inline styles
    or markup from the figure reach the page)."""
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plots(d: Dashboard) -> dict[str, str]:
    """Title → SVG ``data:`` URL of each dashboard plot."""
    out: dict[str, str] = {}
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    months = sorted({m for c in d.over_time.values() for m in c})
    for site, counts in d.over_time.items():
        ax.plot(months, [counts.get(m, 0) for m in months], marker="o", label=site)
    if months:
        ax.set_ylabel("studies")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    else:
        _empty(ax)
    out["Cases over time by site"] = _svg(fig, "Cases over time by site (study month)")

    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    shown = [p for p in d.positivity if p.tested]
    if shown:
        rates = [p.positive / p.tested for p in shown]
        errs = [
            [r - p.low for r, p in zip(rates, shown, strict=True)],
            [p.high - r for r, p in zip(rates, shown, strict=True)],
        ]
        ax.bar([p.site for p in shown], rates, yerr=errs, capsize=4, color="#4c78a8")
        ax.set_ylim(0, 1)
        ax.set_ylabel("COVID-19 positive (Wilson 95% CI)")
    else:
        _empty(ax)
    out["COVID-19 positivity by site"] = _svg(fig, "COVID-19 positivity by site")

    for title, data, color in (
        ("Report category distribution", d.categories, "#f58518"),
        ("Modality / vendor mix (series)", d.modality_vendor, "#54a24b"),
    ):
        fig = Figure(figsize=(6.4, max(2.4, 0.35 * len(data) + 1)))
        ax = fig.add_subplot()
        if data:
            ax.barh(list(data)[::-1], list(data.values())[::-1], color=color)
            ax.tick_params(axis="y", labelsize=8)
        else:
            _empty(ax)
        out[title] = _svg(fig, title)

    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    bands = list(d.demographics)
    sexes = sorted({s for c in d.demographics.values() for s in c})
    bottom = [0] * len(bands)
    for sex in sexes:
        values = [d.demographics[b].get(sex, 0) for b in bands]
        ax.bar(bands, values, bottom=bottom, label=sex)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    if bands:
        ax.set_ylabel("patients")
        ax.set_xlabel("age band")
        ax.legend(fontsize=8)
    else:
        _empty(ax)
    out["Demographic mix"] = _svg(fig, "Demographic mix (age band, sex)")
    return out
