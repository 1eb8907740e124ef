"""De-identification profiles: the PS3.15 Basic Profile plus the options a facility chooses.

A profile is a small YAML document (see ``data/default-profile.yaml``); a facility's own YAML in
``Facility.deid_profile`` replaces the default. Parsing is strict so that a typo in an option name
can never silently weaken de-identification.
"""

from __future__ import annotations

from functools import cache, lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pair.core.errors import Invalid


class DeidOptions(BaseModel):
    """PS3.15 Annex E options (Table E.1-1 columns). The ``clean_*`` pixel/graphics options are
    accepted only as ``false``: PAIR does not alter pixel data or graphics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retain_longitudinal_modified_dates: bool = False
    retain_longitudinal_full_dates: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_uids: bool = False
    retain_safe_private: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    clean_pixel_data: bool = False
    clean_recognizable_visual_features: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> DeidOptions:
        if self.retain_longitudinal_full_dates and self.retain_longitudinal_modified_dates:
            raise ValueError(
                "retain_longitudinal_full_dates and retain_longitudinal_modified_dates exclude "
                "each other; enable at most one"
            )
        for name in (
            "clean_pixel_data",
            "clean_recognizable_visual_features",
            "clean_graphics",
            "clean_structured_content",
        ):
            if getattr(self, name):
                raise ValueError(
                    f"{name} is not supported: PAIR does not alter pixel data, graphics or "
                    "structured content beyond the Basic Profile (at-risk instances are flagged "
                    "for review instead); set it to false"
                )
        return self

    def enabled(self) -> list[str]:
        """Names of the options switched on, in declaration order."""
        return [name for name in type(self).model_fields if getattr(self, name)]


class DateShift(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_days: int = Field(default=-3650, ge=-36500, le=36500)
    max_days: int = Field(default=-365, ge=-36500, le=36500)

    @model_validator(mode="after")
    def _range(self) -> DateShift:
        if self.min_days > self.max_days:
            raise ValueError(f"min_days ({self.min_days}) must be <= max_days ({self.max_days})")
        if self.min_days <= 0 <= self.max_days:
            raise ValueError("the range must not contain 0 (a zero shift keeps the real dates)")
        return self


class DeidProfile(BaseModel):
    """Basic Profile + options + date-shift range. Immutable and hashable (compiled once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="pair-default", min_length=1, max_length=40)
    version: int = Field(default=1, ge=1)
    options: DeidOptions = DeidOptions()
    date_shift: DateShift = DateShift()

    @property
    def label(self) -> str:
        return f"PAIR {self.name} v{self.version}"


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(document)"


def parse_profile(text: str) -> DeidProfile:
    """Parse a profile YAML document; errors name the field (and line for YAML syntax)."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise Invalid(f"De-identification profile is not valid YAML{where}: {problem}.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise Invalid(
            "De-identification profile must be a YAML mapping with keys name, version, options, "
            f"date_shift; got {type(data).__name__}."
        )
    try:
        return DeidProfile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _location(tuple(err["loc"]))
            if err["type"] == "extra_forbidden":
                parent = tuple(err["loc"][:-1])
                allowed = _allowed_keys(parent)
                problems.append(f"{loc}: unknown key; allowed: {', '.join(allowed)}")
            else:
                msg = str(err["msg"]).removeprefix("Value error, ")
                problems.append(f"{loc}: {msg}")
        raise Invalid(
            "De-identification profile is invalid: " + "; ".join(problems) + "."
        ) from None


def _allowed_keys(parent: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = DeidProfile
    for part in parent:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return list(model.model_fields)


DEVICE_IDENTITY_WARNING = (
    "Retain Device Identity is on: station names, device serial numbers and detector IDs are "
    "kept, and station names such as CTSCANNER01 or SGHCT01A can identify the institution. "
    "Turn it off unless the receiving project needs them."
)


def profile_warnings(profile: DeidProfile) -> list[str]:
    """Risks an admin must see next to a profile (opt-in options that can identify a site)."""
    return [DEVICE_IDENTITY_WARNING] if profile.options.retain_device_identity else []


@cache
def default_profile_text() -> str:
    return (resources.files("pair.deid") / "data" / "default-profile.yaml").read_text("utf-8")


def default_profile() -> DeidProfile:
    return parse_profile(default_profile_text())


@cache
def strict_profile() -> DeidProfile:
    """The Basic Profile without options (``data/strict-profile.yaml``): quarantine re-runs."""
    text = (resources.files("pair.deid") / "data" / "strict-profile.yaml").read_text("utf-8")
    return parse_profile(text)


@lru_cache(maxsize=64)
def profile_for(facility_profile: str | None) -> DeidProfile:
    """The facility's own profile when it has one, else the site default."""
    if facility_profile and facility_profile.strip():
        return parse_profile(facility_profile)
    return default_profile()
