"""Truth (reference standard) sources for an evaluation run.

* ``rt-pcr`` — the clinical record: ``test_result_text`` Positive/Negative, else
  ``covid19_positive`` Yes/No (per patient).
* ``report:MODULE:VALUE[,VALUE]`` — the study's final report of MODULE: positive when its summary
  value (e.g. the RSNA category) is one of the values, negative otherwise (e.g. "RSNA typical vs
  not": ``report:rsna-cxr-covid:typical``).
* ``report:MODULE`` — the report category itself as a class label, for multiclass algorithms
  (e.g. ``report:rsna-ct-covid``: typical / indeterminate / atypical / negative), mapped to the
  manifest's classes by ``pair.evaluation.runs.classes``.
* ``csv`` — an uploaded label CSV with a ``label`` column and one key column: ``study_uid``
  (de-identified), ``series_uid`` (de-identified), ``accession_number`` or ``patient_id``
  (originals, mapped locally through the private mapping store and never stored). For a
  multiclass algorithm the labels are class names (name, label or CDE code of a class).

Cases without a truth value are excluded and counted by reason.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.algorithms.manifest import OutputClass
from pair.core.errors import Invalid, NotFound
from pair.deid.models import PrivatePatientIdentity, PrivateStudyIdentity
from pair.evaluation.runs.classes import allowed_names, match_class, module_class_map
from pair.evaluation.runs.cohort import CohortCase
from pair.reporting.loader import all_modules, get_module
from pair.reporting.service import final_labels

KEY_COLUMNS = ("study_uid", "series_uid", "accession_number", "patient_id")
_POS = {"1", "yes", "true", "positive", "pos", "covid"}
_NEG = {"0", "no", "false", "negative", "neg", "non_covid"}


@dataclass
class Truth:
    spec: str
    description: str
    by_series: dict[str, int] = field(default_factory=dict)
    by_study: dict[str, int] = field(default_factory=dict)
    by_patient: dict[str, int] = field(default_factory=dict)  # pseudonym -> label
    missing_reason: str = "no reference label"
    reasons_by_study: dict[str, str] = field(default_factory=dict)  # why a study has no label

    def reason(self, case: CohortCase) -> str:
        """Why ``case`` has no label (for the exclusion counts)."""
        return self.reasons_by_study.get(case.study_uid, self.missing_reason)

    def label(self, case: CohortCase) -> int | None:
        for table, key in (
            (self.by_series, case.case_id),
            (self.by_study, case.study_uid),
            (self.by_patient, case.pseudonym),
        ):
            if key in table:
                return table[key]
        return None

    def mapped(self) -> dict[str, Any]:
        return {"series": self.by_series, "studies": self.by_study, "patients": self.by_patient}


def parse_label(text: str) -> int | None:
    t = text.strip().lower()
    return 1 if t in _POS else 0 if t in _NEG else None


def is_class_spec(spec: str) -> bool:
    """``report:MODULE`` without values: the category itself is the (multiclass) label."""
    return spec.startswith("report:") and len(spec.split(":", 2)) == 2


def describe_spec(spec: str) -> str:
    if spec == "rt-pcr":
        return "RT-PCR result from the clinical record (test_result_text, else covid19_positive)"
    if is_class_spec(spec):
        return f"Final report {spec.split(':')[1]}: its category as the reference class"
    if spec.startswith("report:"):
        _, module, values = spec.split(":", 2)
        wanted = values.replace(",", " or ")
        return f"Final report {module}: positive = category {wanted}, negative = any other"
    return "Uploaded label CSV (site reference labels)"


def module_categories(module_id: str) -> list[tuple[str, str]] | None:
    """(value, label) of each category of a report module's summary element; None when the
    summary is not a category (e.g. a severity total). Unknown module: ``Invalid``."""
    try:
        module = get_module(module_id)
    except NotFound as exc:
        known = ", ".join(sorted({m.id for m in all_modules().values()}))
        raise Invalid(f"{exc.message.rstrip('.')}; use one of: {known}.") from exc
    summary = module.by_id.get(module.summary_element) if module.summary_element else None
    if summary is None or not summary.choices:
        return None
    return [(ch.value, ch.label) for ch in summary.choices]


def check_report_values(module_id: str, values: list[str]) -> list[str]:
    """The module's category values for ``values`` (value or label, any case); a value that
    is no category of the module is refused with the module's categories."""
    categories = module_categories(module_id)
    if categories is None:
        return values
    lookup = {k.strip().lower(): v for v, label in categories for k in (v, label)}
    unknown = [v for v in values if v.strip().lower() not in lookup]
    if unknown:
        shown = ", ".join(f"{v} ({label})" for v, label in categories)
        raise Invalid(
            f"{', '.join(repr(u) for u in unknown)} "
            f"{'is not a category' if len(unknown) == 1 else 'are not categories'} of report "
            f"module {module_id!r}; its categories are: {shown}."
        )
    return [lookup[v.strip().lower()] for v in values]


def check_spec(spec: str) -> str:
    """Validate a truth spec string (report modules and their categories included); returns it
    normalised."""
    spec = spec.strip()
    if spec in ("rt-pcr", "csv"):
        return spec
    if spec.startswith("report:"):
        parts = spec.split(":", 2)
        if len(parts) == 3 and parts[1] and parts[2].strip(","):
            values = [v.strip() for v in parts[2].split(",") if v.strip()]
            return f"report:{parts[1]}:{','.join(check_report_values(parts[1], values))}"
        if len(parts) == 2 and parts[1]:
            module_categories(parts[1])
            return spec
    raise Invalid(
        f"Unknown truth source {spec!r}; use rt-pcr, report:MODULE:VALUE[,VALUE] "
        "(e.g. report:rsna-cxr-covid:typical), report:MODULE (the category as class, for "
        "multiclass algorithms) or csv (with a label file)."
    )


def clinical_label(clinical: dict[str, Any]) -> int | None:
    result = clinical.get("test_result_text")
    if result in ("Positive", "Negative"):
        return 1 if result == "Positive" else 0
    status = clinical.get("covid19_positive")
    if status in ("Yes", "No"):
        return 1 if status == "Yes" else 0
    return None


def resolve_truth(
    session: Session,
    facility_id: int | None,
    spec: str,
    cases: list[CohortCase],
    mapped: dict[str, Any] | None = None,
    classes: list[OutputClass] | None = None,
) -> Truth:
    """Labels for the cohort's cases; ``mapped`` is a CSV already mapped by ``map_label_csv``.

    With ``classes`` (a multiclass algorithm) labels are class indices into ``classes``.
    """
    spec = check_spec(spec)
    truth = Truth(spec, describe_spec(spec))
    if classes is not None:
        return _resolve_classes(session, facility_id, truth, mapped, classes)
    if is_class_spec(spec):
        raise Invalid(
            f"Truth source {spec} gives class labels; it needs a multiclass algorithm "
            "(for a binary one use report:MODULE:VALUE[,VALUE])."
        )
    if spec == "rt-pcr":
        truth.missing_reason = "no RT-PCR result"
        for c in cases:
            y = clinical_label(c.clinical)
            if y is not None:
                truth.by_patient[c.pseudonym] = y
    elif spec.startswith("report:"):
        _, module, values = spec.split(":", 2)
        wanted = {v.strip().lower() for v in values.split(",") if v.strip()}
        truth.missing_reason = f"no final {module} report"
        for lab in final_labels(session, facility_id):
            if lab.module_id == module:
                truth.by_study[lab.study_uid] = int(str(lab.summary_value).lower() in wanted)
    else:
        if mapped is None:
            raise Invalid("Truth source csv needs a label file (--labels FILE or an upload).")
        truth.missing_reason = "not in the label file"
        truth.by_series = {k: int(v) for k, v in mapped.get("series", {}).items()}
        truth.by_study = {k: int(v) for k, v in mapped.get("studies", {}).items()}
        truth.by_patient = {k: int(v) for k, v in mapped.get("patients", {}).items()}
    return truth


def _resolve_classes(
    session: Session,
    facility_id: int | None,
    truth: Truth,
    mapped: dict[str, Any] | None,
    classes: list[OutputClass],
) -> Truth:
    spec = truth.spec
    index = {c.name: i for i, c in enumerate(classes)}
    if is_class_spec(spec):
        module = spec.split(":")[1]
        to_class = module_class_map(module, classes)
        truth.missing_reason = f"no final {module} report"
        for lab in final_labels(session, facility_id):
            if lab.module_id != module:
                continue
            name = to_class.get(str(lab.summary_value))
            if name is None:
                truth.by_study.pop(lab.study_uid, None)
                truth.reasons_by_study[lab.study_uid] = (
                    f"report category {lab.summary_value!r} is not a class of the algorithm"
                )
            else:
                truth.by_study[lab.study_uid] = index[name]
                truth.reasons_by_study.pop(lab.study_uid, None)
        return truth
    if spec != "csv":
        raise Invalid(
            f"The algorithm is multiclass (classes {allowed_names(classes)}): truth source "
            f"{spec} gives binary labels. Use report:MODULE (the report category as class) or "
            "a label CSV with class names."
        )
    if mapped is None:
        raise Invalid("Truth source csv needs a label file (--labels FILE or an upload).")
    truth.missing_reason = "not in the label file"
    tables = (
        ("series", truth.by_series),
        ("studies", truth.by_study),
        ("patients", truth.by_patient),
    )
    for key, table in tables:
        for k, v in mapped.get(key, {}).items():
            if v not in index:
                raise Invalid(
                    f"Label {v!r} is not a class of the algorithm ({allowed_names(classes)}); "
                    "upload the label file again."
                )
            table[k] = index[v]
    return truth


def check_class_labels(mapped: dict[str, Any], classes: list[OutputClass] | None) -> None:
    """Refuse a mapped label file whose labels do not fit the algorithm's output kind."""
    values = {v for table in mapped.values() for v in table.values()}
    names = {c.name for c in classes or []}
    if classes is None:
        bad = sorted(str(v) for v in values if v not in (0, 1))
        if bad:
            raise Invalid(
                f"Label file has class labels {bad}; a binary algorithm needs 0/1 labels."
            )
    else:
        bad = sorted(str(v) for v in values if v not in names)
        if bad:
            raise Invalid(
                f"Label file has labels {bad} that are not classes of the algorithm "
                f"({allowed_names(classes)})."
            )


def map_label_csv(
    session: Session,
    facility_id: int,
    data: bytes,
    classes: list[OutputClass] | None = None,
) -> dict[str, Any]:
    """Map an uploaded label CSV to de-identified keys. Every bad row is reported at once.

    Binary labels become 0/1; with ``classes`` (multiclass) each label must name a class and is
    stored as the class name.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Invalid("Label file is not UTF-8 text.") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    keys = [k for k in KEY_COLUMNS if k in header]
    if "label" not in header or len(keys) != 1:
        raise Invalid(
            "Label file needs a header with a 'label' column and exactly one key column of: "
            f"{', '.join(KEY_COLUMNS)} (found: {', '.join(header) or 'nothing'})."
        )
    key = keys[0]
    out: dict[str, dict[str, int | str]] = {"series": {}, "studies": {}, "patients": {}}
    first_row: dict[tuple[str, str], int] = {}  # (table, de-identified key) -> row giving it
    errors: list[str] = []

    def put(table: str, mapped_key: str, y: int | str, n: int) -> None:
        """One label per key: a second row with another label is a conflict (rows named,
        values not: they may be original identifiers)."""
        earlier = first_row.setdefault((table, mapped_key), n)
        if earlier != n and out[table][mapped_key] != y:
            errors.append(
                f"rows {earlier} and {n}: the same {key} has different labels "
                f"({out[table][mapped_key]!r} and {y!r}); keep one"
            )
            return
        out[table][mapped_key] = y

    for n, row in enumerate(reader, start=2):
        value = (row.get(key) or "").strip()
        y: int | str | None
        if classes is None:
            y = parse_label(row.get("label") or "")
        else:
            y = match_class(row.get("label") or "", classes)
        if not value:
            errors.append(f"row {n}: empty {key}")
            continue
        if y is None and classes is not None:
            errors.append(
                f"row {n}: label {row.get('label')!r} is not a class of the algorithm "
                f"(use one of: {allowed_names(classes)})"
            )
            continue
        if y is None:
            errors.append(
                f"row {n}: label {row.get('label')!r} is not 0/1, yes/no, positive/negative"
            )
            continue
        if key == "series_uid":
            put("series", value, y, n)
        elif key == "study_uid":
            put("studies", value, y, n)
        elif key == "accession_number":
            found = session.scalars(
                select(PrivateStudyIdentity.study_uid).where(
                    PrivateStudyIdentity.facility_id == facility_id,
                    PrivateStudyIdentity.original_accession_number == value,
                )
            ).all()
            if not found:
                errors.append(f"row {n}: accession number not found in this facility")
            for uid in found:
                put("studies", uid, y, n)
        else:
            pseudonym = session.scalar(
                select(PrivatePatientIdentity.pseudonym).where(
                    PrivatePatientIdentity.facility_id == facility_id,
                    PrivatePatientIdentity.original_patient_id == value,
                )
            )
            if pseudonym is None:
                errors.append(f"row {n}: patient id not found in this facility")
            else:
                put("patients", pseudonym, y, n)
    if errors:
        shown = "; ".join(errors[:20]) + (
            f"; and {len(errors) - 20} more" if len(errors) > 20 else ""
        )
        raise Invalid(f"Label file refused ({len(errors)} bad row(s)): {shown}.", details=errors)
    if not any(out.values()):
        raise Invalid("Label file has no rows.")
    return out
