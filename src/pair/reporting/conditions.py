"""CARDS 2.0 conditions and report-text parts as small immutable trees.

Modules write them compactly in YAML (``{equal: [ggo, present]}``); ``parse_condition`` and
``parse_parts`` turn that into these dataclasses with error messages that name the path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

COMPARISONS = {
    "equal": "EqualCondition",
    "not_equal": "NotEqualCondition",
    "gt": "GreaterThanCondition",
    "gte": "GreaterThanOrEqualsCondition",
    "lt": "LessThanCondition",
    "lte": "LessThanOrEqualsCondition",
    "contains": "ContainsCondition",
}
CONDITION_KEYS = (*COMPARISONS, "any_n", "has_value", "and", "or", "not")


@dataclass(frozen=True)
class Compare:
    op: str
    element: str
    value: Any


@dataclass(frozen=True)
class AnyN:
    element: str
    minimum: int


@dataclass(frozen=True)
class HasValue:
    element: str


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Compare | AnyN | HasValue | AllOf | AnyOf | Not


def parse_condition(raw: Any, where: str = "condition") -> Condition:
    if isinstance(raw, Compare | AnyN | HasValue | AllOf | AnyOf | Not):
        return raw
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ValueError(
            f"{where}: a condition is a mapping with exactly one key of "
            f"{', '.join(CONDITION_KEYS)}; got {raw!r}"
        )
    ((key, arg),) = raw.items()
    if key in COMPARISONS:
        if not (isinstance(arg, list | tuple) and len(arg) == 2 and isinstance(arg[0], str)):
            raise ValueError(f"{where}.{key}: expected [element_id, value]; got {arg!r}")
        return Compare(key, arg[0], arg[1])
    if key == "any_n":
        if not (isinstance(arg, list | tuple) and len(arg) == 2 and isinstance(arg[1], int)):
            raise ValueError(f"{where}.any_n: expected [element_id, minimum_choices]; got {arg!r}")
        return AnyN(str(arg[0]), int(arg[1]))
    if key == "has_value":
        if not isinstance(arg, str):
            raise ValueError(f"{where}.has_value: expected an element id; got {arg!r}")
        return HasValue(arg)
    if key in ("and", "or"):
        if not isinstance(arg, list) or len(arg) < 1:
            raise ValueError(f"{where}.{key}: expected a non-empty list of conditions")
        items = tuple(parse_condition(c, f"{where}.{key}[{i}]") for i, c in enumerate(arg))
        return AllOf(items) if key == "and" else AnyOf(items)
    if key == "not":
        return Not(parse_condition(arg, f"{where}.not"))
    raise ValueError(f"{where}: unknown condition {key!r}; allowed: {', '.join(CONDITION_KEYS)}")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def holds(cond: Condition, values: Mapping[str, Any]) -> bool:
    """Evaluate against current values; a missing value satisfies only not-equal."""
    if isinstance(cond, Compare):
        current = values.get(cond.element)
        if cond.op in ("equal", "contains"):
            if isinstance(current, list):
                return cond.value in current
            return current is not None and current == cond.value
        if cond.op == "not_equal":
            if isinstance(current, list):
                return cond.value not in current
            return current != cond.value
        left, right = _num(current), _num(cond.value)
        if left is None or right is None:
            return False
        return {
            "gt": left > right,
            "gte": left >= right,
            "lt": left < right,
            "lte": left <= right,
        }[cond.op]
    if isinstance(cond, AnyN):
        current = values.get(cond.element)
        return isinstance(current, list) and len(current) >= cond.minimum
    if isinstance(cond, HasValue):
        current = values.get(cond.element)
        return current is not None and current != [] and current != ""
    if isinstance(cond, AllOf):
        return all(holds(c, values) for c in cond.items)
    if isinstance(cond, AnyOf):
        return any(holds(c, values) for c in cond.items)
    return not holds(cond.item, values)


def walk(cond: Condition) -> Iterator[Condition]:
    yield cond
    if isinstance(cond, AllOf | AnyOf):
        for c in cond.items:
            yield from walk(c)
    elif isinstance(cond, Not):
        yield from walk(cond.item)


def to_yaml(cond: Condition) -> dict[str, Any]:
    if isinstance(cond, Compare):
        return {cond.op: [cond.element, cond.value]}
    if isinstance(cond, AnyN):
        return {"any_n": [cond.element, cond.minimum]}
    if isinstance(cond, HasValue):
        return {"has_value": cond.element}
    if isinstance(cond, AllOf):
        return {"and": [to_yaml(c) for c in cond.items]}
    if isinstance(cond, AnyOf):
        return {"or": [to_yaml(c) for c in cond.items]}
    return {"not": to_yaml(cond.item)}


# ---- report text parts ------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class InsertValue:
    element: str
    digits: int | None = None


@dataclass(frozen=True)
class InsertPartial:
    partial: str


@dataclass(frozen=True)
class Newline:
    pass


@dataclass(frozen=True)
class When:
    condition: Condition
    then: tuple[Part, ...]
    otherwise: tuple[Part, ...] = ()


Part = Text | InsertValue | InsertPartial | Newline | When
PART_KEYS = ("text", "value", "partial", "newline", "when")


def parse_parts(raw: Any, where: str) -> tuple[Part, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected a list of report text parts")
    out: list[Part] = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if isinstance(item, Text | InsertValue | InsertPartial | Newline | When):
            out.append(item)
        elif item == "newline":
            out.append(Newline())
        elif isinstance(item, str):
            out.append(Text(item))
        elif not isinstance(item, Mapping):
            raise ValueError(f"{here}: expected a string or a mapping with one of {PART_KEYS}")
        elif "text" in item:
            out.append(Text(str(item["text"])))
        elif "value" in item:
            digits = item.get("digits")
            out.append(InsertValue(str(item["value"]), int(digits) if digits is not None else None))
        elif "partial" in item:
            out.append(InsertPartial(str(item["partial"])))
        elif "newline" in item:
            out.append(Newline())
        elif "when" in item:
            cond = parse_condition(item["when"], f"{here}.when")
            then = parse_parts(item.get("then"), f"{here}.then")
            otherwise = parse_parts(item.get("else"), f"{here}.else")
            out.append(When(cond, then, otherwise))
        else:
            raise ValueError(f"{here}: unknown part {sorted(item)}; allowed keys: {PART_KEYS}")
    return tuple(out)


def part_conditions(parts: tuple[Part, ...]) -> Iterator[Condition]:
    for p in parts:
        if isinstance(p, When):
            yield p.condition
            yield from part_conditions(p.then)
            yield from part_conditions(p.otherwise)


def part_values(parts: tuple[Part, ...]) -> Iterator[InsertValue | InsertPartial]:
    for p in parts:
        if isinstance(p, InsertValue | InsertPartial):
            yield p
        elif isinstance(p, When):
            yield from part_values(p.then)
            yield from part_values(p.otherwise)
