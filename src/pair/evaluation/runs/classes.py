"""Class labels for multiclass truth: map report categories and CSV class names to the
manifest's classes, with errors that say which names are unknown and what is allowed.

A name matches a manifest class when it equals (case-insensitively) the class ``name``, its
``label`` or its ``cde_code``. A report module's category matches a class when the category's
value, label or CDE code matches it.
"""

from __future__ import annotations

from pair.algorithms.manifest import OutputClass
from pair.core.errors import Invalid, NotFound
from pair.reporting.loader import get_module


def class_lookup(classes: list[OutputClass]) -> dict[str, str]:
    """Lower-cased name, label and CDE code -> class name."""
    out: dict[str, str] = {}
    for c in classes:
        for key in (c.name, c.label, c.cde_code):
            if key:
                out.setdefault(key.strip().lower(), c.name)
    return out


def allowed_names(classes: list[OutputClass]) -> str:
    return ", ".join(c.name for c in classes)


def match_class(text: str, classes: list[OutputClass]) -> str | None:
    return class_lookup(classes).get(text.strip().lower())


def module_class_map(module_id: str, classes: list[OutputClass]) -> dict[str, str]:
    """Report category value of ``module_id``'s summary element -> manifest class name.

    Every manifest class must have a category in the module (else the names do not line up and
    the evaluation would silently miss a class); module categories without a class are allowed
    (e.g. CO-RADS 0 and 6 for a CO-RADS 1-5 model) and their cases are excluded with a reason.
    """
    try:
        module = get_module(module_id)
    except NotFound as exc:
        raise Invalid(exc.message) from exc
    summary = module.by_id.get(module.summary_element) if module.summary_element else None
    if summary is None or not summary.choices:
        raise Invalid(f"Reporting module {module_id!r} has no summary category to use as classes.")
    lookup = class_lookup(classes)
    mapping: dict[str, str] = {}
    for ch in summary.choices:
        for key in (ch.value, ch.label, ch.cde):
            if key and key.strip().lower() in lookup:
                mapping[ch.value] = lookup[key.strip().lower()]
                break
    unmatched = [c.name for c in classes if c.name not in mapping.values()]
    if unmatched:
        cats = ", ".join(f"{ch.value} ({ch.label})" for ch in summary.choices)
        raise Invalid(
            f"Algorithm class(es) {', '.join(unmatched)} have no category in report module "
            f"{module_id!r} (its categories: {cats}). Class names, labels or CDE codes must "
            "match the categories' values, labels or CDE codes."
        )
    return mapping
