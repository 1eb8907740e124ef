"""Evaluation runs of multiclass algorithms: input checks and case rows.

Kept apart from ``execute.execute_run`` so the run machinery stays one code path: the run
resolves class-index truth, stores each case's probability vector (``probs``, manifest class
order) and hands the rows to the multiclass task's ``evaluate`` (``execute.evaluate_cases``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from pair.algorithms import service as algorithms
from pair.algorithms.manifest import Manifest, OutputClass, OutputKind
from pair.core.errors import Invalid
from pair.evaluation.runs.classes import allowed_names, module_class_map
from pair.evaluation.runs.truth import check_class_labels, is_class_spec


def output_classes(manifest: Manifest) -> list[OutputClass] | None:
    """The manifest's classes when runs evaluate it as multiclass, else None (binary path)."""
    if manifest.output.kind == OutputKind.MULTICLASS:
        return list(manifest.output.classes)
    return None


def label_classes(session: Session, algorithm: str) -> list[OutputClass] | None:
    """Classes a label CSV must use for ``algorithm`` (None: binary 0/1 labels)."""
    row = algorithms.get_algorithm(session, *algorithms.parse_ref(algorithm))
    return output_classes(Manifest.model_validate(row.manifest))


def check_run_inputs(
    manifest: Manifest,
    ref: str,
    spec: str,
    labels: dict[str, Any] | None,
    *,
    compare: tuple[Manifest, str] | None,
    compare_report: str | None,
) -> None:
    """Refuse truth sources, label files and comparisons that do not fit the output kind.

    ``compare`` is the second algorithm's manifest and reference: a multiclass algorithm can
    only be compared with one that has the same classes in the same order, or with the report
    category of a module whose categories match its classes (``compare_report`` = MODULE)."""
    classes = output_classes(manifest)
    if classes is None:
        if is_class_spec(spec):
            raise Invalid(
                f"Truth source {spec} gives class labels, but {ref} is a "
                f"{manifest.output.kind.value} algorithm: use report:MODULE:VALUE[,VALUE] "
                "(the values count as positive)."
            )
    else:
        if compare_report:
            if ":" in compare_report.strip(":"):
                raise Invalid(
                    f"{ref} is multiclass (classes {allowed_names(classes)}): compare with the "
                    "report category as the readers' class, i.e. --compare-report MODULE "
                    f"without values (got {compare_report!r})."
                )
            module_class_map(compare_report.strip(":"), classes)
        if compare is not None:
            other, other_ref = compare
            theirs = output_classes(other)
            if theirs is None or [c.name for c in theirs] != [c.name for c in classes]:
                what = (
                    f"has classes {allowed_names(theirs)}"
                    if theirs is not None
                    else f"is a {other.output.kind.value} algorithm"
                )
                raise Invalid(
                    f"Cannot compare {ref} (multiclass, classes {allowed_names(classes)}) with "
                    f"{other_ref}, which {what}: a paired multiclass comparison needs the same "
                    "classes in the same order."
                )
        if spec != "csv" and not is_class_spec(spec):
            raise Invalid(
                f"{ref} is multiclass (classes {allowed_names(classes)}): truth source {spec} "
                "gives binary labels. Use report:MODULE (e.g. report:rsna-ct-covid, the report "
                "category as class) or csv with class names in the label column."
            )
        if is_class_spec(spec):
            module_class_map(spec.split(":")[1], classes)
    if classes is None:
        check_binary_comparator(manifest, compare)
        if compare_report and ":" not in compare_report.strip(":"):
            raise Invalid(
                f"{ref} is a {manifest.output.kind.value} algorithm: compare with the report "
                "category as MODULE:VALUE[,VALUE] (the values count as positive), got "
                f"{compare_report!r}."
            )
    if spec == "csv" and labels:
        check_class_labels(labels, classes)


def check_binary_comparator(manifest: Manifest, compare: tuple[Manifest, str] | None) -> None:
    """A binary (or score) algorithm cannot be compared with a multiclass one."""
    if compare is not None and output_classes(compare[0]) is not None:
        raise Invalid(
            f"Cannot compare a {manifest.output.kind.value} algorithm with {compare[1]}, "
            "which is multiclass: compare multiclass algorithms with each other."
        )


def reader_probabilities(k: int, label: int | None) -> list[float]:
    """The readers' report category as a one-hot "probability" vector (their class)."""
    if label is None:
        raise Invalid("a compared case needs the readers' category")
    return [1.0 if i == label else 0.0 for i in range(k)]


def case_probabilities(classes: list[OutputClass], outputs: dict[str, float] | None) -> list[float]:
    if outputs is None:
        raise Invalid("a multiclass case needs its class outputs")
    return [float(outputs[c.name]) for c in classes]
