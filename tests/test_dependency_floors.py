"""The floors in pyproject.toml match what the code uses: an install at the floor must work.

A feature the code relies on is listed with the first release that has it; its floor may not
be lower. The installed versions (the ones the suite runs against) must satisfy every floor.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "pair"

# (distribution, first version with the feature, what in the code needs it)
FEATURES = [
    ("fastapi", "0.121", re.compile(r"Depends\([^)]*scope=")),
    ("python-multipart", "0.0.13", re.compile(r"^\s*(from|import) python_multipart", re.M)),
    ("starlette", "0.40", re.compile(r"^\s*(from|import) starlette", re.M)),
]


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {r.name.lower(): r for r in reqs}


def _floor(req: Requirement) -> Version | None:
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


def _source() -> str:
    return "\n".join(p.read_text() for p in SRC.rglob("*.py"))


def test_feature_floors() -> None:
    reqs, code = _requirements(), _source()
    for dist, first, pattern in FEATURES:
        if not pattern.search(code):
            continue
        assert dist in reqs, f"the code uses {dist} ({pattern.pattern}) but does not declare it"
        floor = _floor(reqs[dist])
        assert floor is not None and floor >= Version(first), (
            f"{dist} floor {floor} is below {first}, the first release with what the code uses"
        )


def test_installed_versions_satisfy_floors() -> None:
    for name, req in _requirements().items():
        if req.marker is not None and not req.marker.evaluate():
            continue
        installed = importlib.metadata.version(name)
        assert req.specifier.contains(installed, prereleases=True), (name, installed, str(req))
