"""Turn DICOM files and folders into runner cases: one per instance, series or study."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import TextIO

import pydicom

from pair.algorithms.manifest import InputSpec
from pair.algorithms.runner import Case, CaseResult
from pair.core.errors import Invalid


class Grouping(StrEnum):
    INSTANCE = "instance"
    SERIES = "series"
    STUDY = "study"


def grouping_for(spec: InputSpec, group: Grouping | None) -> Grouping:
    """The case grouping for a package: by default one case per instance, or per series for a
    slab (2.5D) package, which needs a series' neighbouring slices; a slab package refuses
    instance and study grouping (a single slice, or slices of several series mixed)."""
    if spec.slab is None:
        return group or Grouping.INSTANCE
    if group not in (None, Grouping.SERIES):
        raise Invalid(
            f"a slab (2.5D) package takes one CT series per case; --group {group.value} "
            "is not possible, use --group series"
        )
    return Grouping.SERIES


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders recursively (hidden files skipped), sorted within each folder."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            out.append(p)
    return out


def cases_from_paths(paths: Iterable[Path], group: Grouping = Grouping.INSTANCE) -> list[Case]:
    """Group files into cases by Series or Study Instance UID (header only, no pixels).

    A file whose header cannot be read becomes a case of its own, so the runner reports it.
    """
    files = expand(paths)
    if group == Grouping.INSTANCE:
        return [Case(str(f), [f]) for f in files]
    tag = "SeriesInstanceUID" if group == Grouping.SERIES else "StudyInstanceUID"
    groups: dict[str, list[tuple[int, Path]]] = {}
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=[tag, "InstanceNumber"])
            key = str(ds.get(tag, "") or f)
            number = int(ds.get("InstanceNumber", 0) or 0)
        except Exception:  # unreadable: the runner will say why
            key, number = str(f), 0
        groups.setdefault(key, []).append((number, f))
    return [Case(k, [f for _, f in sorted(v, key=lambda t: t[0])]) for k, v in groups.items()]


def write_results_csv(out: TextIO, class_names: list[str], results: Iterable[CaseResult]) -> None:
    """One row per case: id, images, score, each class output, error and message."""
    w = csv.writer(out)
    w.writerow(["case_id", "n_images", "score", *class_names, "error", "message", "cached"])
    for r in results:
        outputs = r.outputs or {}
        w.writerow(
            [
                r.case_id,
                r.n_images,
                "" if r.score is None else f"{r.score:.6f}",
                *("" if n not in outputs else f"{outputs[n]:.6f}" for n in class_names),
                r.error or "",
                r.message,
                int(r.cached),
            ]
        )
