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
def all_modules() -> dict[tuple[str, str], Module]:
    """Every shipped module version, keyed by (id, version); files are named id@version."""
    found: dict[tuple[str, str], Module] = {}
    for path in sorted(MODULE_DIR.glob("*.yaml")):
        m = load_module_file(path)
        if path.stem != m.key:
            raise Invalid(f"{path.name}: file name must be {m.key}.yaml")
        found[(m.id, m.version)] = m
    return found


def modules() -> dict[str, Module]:
    """The latest version of each shipped module, by id."""
    latest: dict[str, Module] = {}
    for (module_id, _), m in sorted(all_modules().items(), key=lambda kv: _ver(kv[0][1])):
        latest[module_id] = m
    return dict(sorted(latest.items()))


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def get_module(module_id: str, version: str | None = None) -> Module:
    """A module by id (latest version) or by id and version (to rebuild old reports)."""
    if version is not None:
        found = all_modules().get((module_id, version))
        if found is None:
            versions = sorted(v for (i, v) in all_modules() if i == module_id)
            raise NotFound(
                f"No version {version!r} of reporting module {module_id!r}; "
                f"available: {', '.join(versions) or 'none'}."
            )
        return found
    try:
        return modules()[module_id]
    except KeyError:
        raise NotFound(
            f"No reporting module {module_id!r}; available: {', '.join(sorted(modules()))}."
        ) from None
