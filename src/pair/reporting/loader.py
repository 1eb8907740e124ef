"""Load modules from versioned YAML data files; turn pydantic errors into precise messages."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pair.core.errors import Invalid, NotFound
from pair.reporting.model import Module

MODULE_DIR = Path(__file__).parent / "data" / "modules"


def _errors(exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()))
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def parse_module(data: Any, source: str = "module") -> Module:
    if not isinstance(data, dict):
        raise Invalid(f"{source}: a module is a mapping (YAML object).")
    try:
        return Module.model_validate(data)
    except ValidationError as exc:
        problems = _errors(exc)
        raise Invalid(
            f"{source} is not a valid module: " + "; ".join(problems), details=problems
        ) from None


def load_module_file(path: Path) -> Module:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise Invalid(f"{path.name}: not valid YAML ({exc}).") from None
    return parse_module(data, path.name)


@lru_cache(maxsize=1)
def modules() -> dict[str, Module]:
    """All shipped modules by id (latest file per id wins: files are named id@version)."""
    found: dict[str, Module] = {}
    for path in sorted(MODULE_DIR.glob("*.yaml")):
        m = load_module_file(path)
        if path.stem != m.key:
            raise Invalid(f"{path.name}: file name must be {m.key}.yaml")
        if m.id not in found or _ver(m.version) > _ver(found[m.id].version):
            found[m.id] = m
    return found


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def get_module(module_id: str) -> Module:
    try:
        return modules()[module_id]
    except KeyError:
        raise NotFound(
            f"No reporting module {module_id!r}; available: {', '.join(sorted(modules()))}."
        ) from None
