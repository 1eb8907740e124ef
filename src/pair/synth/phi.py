"""Fake identities: realistic-looking PHI for de-identification tests. All of it is invented."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from pair.synth import config
from pair.synth.sampling import pick, weighted


@dataclass(frozen=True)
class Person:
    first: str
    middle: str
    last: str

    @property
    def dicom(self) -> str:
        """DICOM PN: ``Last^First^Middle``."""
        return f"{self.last}^{self.first}^{self.middle}"

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"


@dataclass(frozen=True)
class Identity:
    person: Person
    sex: str
    birth_date: dt.date
    mrn: str
    other_id: str
    address: str
    phone: str
    race: str
    ethnicity: str
    size_m: float
    weight_kg: float


def person(rng: np.random.Generator, sex: str | None = None) -> Person:
    n = config.names()
    s = sex or ("M" if rng.random() < 0.5 else "F")
    return Person(
        pick(rng, n["first_names"][s]), pick(rng, n["middle_initials"]), pick(rng, n["last_names"])
    )


def physician(rng: np.random.Generator) -> str:
    """A physician's DICOM PN, sometimes with a degree suffix."""
    p = person(rng)
    suffix = pick(rng, config.names()["physician_suffixes"])
    return f"{p.last}^{p.first}^{p.middle}^^{suffix}" if suffix else p.dicom


def identity(rng: np.random.Generator, mrn_prefix: str, age: int, index_date: dt.date) -> Identity:
    n = config.names()
    c = config.clinical()
    sex = "M" if rng.random() < 0.52 else "F"
    born = index_date - dt.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
    city = n["cities"][int(rng.integers(len(n["cities"])))]
    number = int(rng.integers(1, 9999))
    street = f"{number} {pick(rng, n['street_names'])} {pick(rng, n['street_types'])}"
    size = float(rng.normal(1.76 if sex == "M" else 1.63, 0.07))
    return Identity(
        person=person(rng, sex),
        sex=sex,
        birth_date=born,
        mrn=f"{mrn_prefix}{int(rng.integers(1_000_000, 9_999_999))}",
        other_id=f"INS-{int(rng.integers(10**8, 10**9 - 1))}",
        address=f"{street}, {city['city']}, {city['state']} {city['zip']}",
        phone=f"({int(rng.integers(201, 989))}) 555-01{int(rng.integers(0, 100)):02d}",
        race=weighted(rng, c["races"]),
        ethnicity=weighted(rng, c["ethnicities"]),
        size_m=round(size, 2),
        weight_kg=round(float(rng.normal(27.0, 5.0)) * size * size, 1),
    )


def fill(template: str, ident: Identity, age: int, extra: dict[str, str]) -> str:
    """Fill a free-text template from clinical.yaml with the patient's (fake) details."""
    return template.format(
        name=ident.person.full,
        first=ident.person.first,
        mrn=ident.mrn,
        age=age,
        sex_word="man" if ident.sex == "M" else "woman",
        **extra,
    )
