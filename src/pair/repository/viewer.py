"""What the series viewer needs besides the images: presets for the modality and the study's
series strip (one thumbnail per series, linking to that series in the viewer)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.repository.models import Instance, Series, Study

PRESETS_FILE = Path(__file__).parent / "data" / "window-presets.yaml"


@lru_cache(maxsize=1)
def _presets() -> dict[str, list[dict[str, Any]]]:
    data = yaml.safe_load(PRESETS_FILE.read_text(encoding="utf-8"))
    presets: dict[str, list[dict[str, Any]]] = data["presets"]
    return presets


def window_presets(modality: str) -> list[dict[str, Any]]:
    """The presets a modality offers (none for radiographs: header window or full range)."""
    return list(_presets().get(modality.upper(), []))


@dataclass(frozen=True)
class StripItem:
    series_uid: str
    modality: str
    number: int | None
    description: str
    images: int


def series_strip(session: Session, study: Study) -> list[StripItem]:
    """The study's series that hold images, in series-number order."""
    counts = (
        select(Instance.series_pk, func.count().label("n"))
        .where(Instance.rows.is_not(None), Instance.rows > 0)
        .group_by(Instance.series_pk)
        .subquery()
    )
    rows = session.execute(
        select(Series, counts.c.n)
        .join(counts, counts.c.series_pk == Series.id)
        .where(Series.study_pk == study.id)
        .order_by(Series.series_number, Series.id)
    ).all()
    return [
        StripItem(s.series_uid, s.modality, s.series_number, s.series_description, n)
        for s, n in rows
    ]
