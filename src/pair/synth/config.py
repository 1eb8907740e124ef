"""Typed access to the versioned YAML data of the generator (site archetypes, names, clinical)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel


class CTSpec(BaseModel):
    manufacturer: str
    model: str
    software: str
    kernel: str
    kernel_sharpness: float
    noise_hu: float
    kvp: int
    mas: tuple[float, float]
    intercept: int


class CXRSpec(BaseModel):
    modality: str
    manufacturer: str
    model: str
    photometric: str
    kvp: tuple[float, float]
    mas: tuple[float, float]
    portable_ap_fraction: float


class AgeMix(BaseModel):
    mean: float
    sd: float


class SiteArchetype(BaseModel):
    key: str
    institution: str
    address: str
    department: str
    station_prefix: str
    mrn_prefix: str
    ct: CTSpec
    cxr: CXRSpec
    transfer_syntax: Literal["explicit", "implicit", "rle", "jpegls", "j2k"]
    covid_prevalence: float
    age: AgeMix


class SitesFile(BaseModel):
    version: int
    archetypes: list[SiteArchetype]


def _load(name: str) -> Any:
    text = resources.files("pair.synth").joinpath("data", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@lru_cache(maxsize=1)
def sites() -> SitesFile:
    return SitesFile.model_validate(_load("sites.yaml"))


@lru_cache(maxsize=1)
def names() -> dict[str, Any]:
    data: dict[str, Any] = _load("names.yaml")
    return data


@lru_cache(maxsize=1)
def clinical() -> dict[str, Any]:
    data: dict[str, Any] = _load("clinical.yaml")
    return data


def site_archetype(site_index: int) -> SiteArchetype:
    """Archetype of site ``site_index`` (0-based); archetypes repeat when sites outnumber them."""
    archetypes = sites().archetypes
    base = archetypes[site_index % len(archetypes)]
    if site_index < len(archetypes):
        return base
    n = site_index + 1
    return base.model_copy(
        update={
            "institution": f"{base.institution} {n}",
            "station_prefix": f"{base.station_prefix}{n}",
            "mrn_prefix": f"{base.mrn_prefix}{n}",
        }
    )
