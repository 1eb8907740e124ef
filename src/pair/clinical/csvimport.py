"""CSV import of clinical data, keyed by the ORIGINAL PatientID or accession number.

The node maps those originals to pseudonymous cases through the site-private mapping store;
originals are only read from the file, never stored. Dates in the file are converted to days
from the index event of the same row and then dropped. All-or-nothing unless ``skip_invalid``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.audit.service import Actor, record
from pair.clinical.dictionary import Dictionary, load_dictionary, parse_date
from pair.clinical.service import clinical_of, store_clinical
from pair.core.errors import Invalid
from pair.deid.models import PrivatePatientIdentity, PrivateStudyIdentity
from pair.repository.models import Patient


@dataclass(frozen=True)
class RowError:
    row: int  # line number in the file (header = 1)
    column: str
    value: str
    rule: str
    message: str

    def __str__(self) -> str:
        return (
            f"row {self.row}, column {self.column!r}, value {self.value!r}: {self.message} "
            f"[{self.rule}]"
        )


@dataclass
class ImportResult:
    rows: int = 0
    imported: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    rejects_path: Path | None = None
    committed: bool = False
    skipped: int = 0  # rows of other facilities (site column) when limited to one facility


def _find_patient(session: Session, facility: Facility, column: str, value: str) -> Patient | None:
    if column == "patient_id":
        pseudonym = session.scalar(
            select(PrivatePatientIdentity.pseudonym).where(
                PrivatePatientIdentity.facility_id == facility.id,
                PrivatePatientIdentity.original_patient_id == value,
            )
        )
    else:
        pseudonym = session.scalar(
            select(PrivateStudyIdentity.pseudonym)
            .where(
                PrivateStudyIdentity.facility_id == facility.id,
                PrivateStudyIdentity.original_accession_number == value,
            )
            .limit(1)
        )
    if pseudonym is None:
        return None
    return session.scalar(
        select(Patient).where(Patient.pseudonym == pseudonym, Patient.facility_id == facility.id)
    )


def _check_header(d: Dictionary, header: list[str]) -> None:
    allowed = d.csv_columns()
    unknown = [c for c in header if c not in allowed]
    if unknown:
        raise Invalid(
            f"Unknown CSV column(s): {', '.join(unknown)}. Allowed columns: {', '.join(allowed)}."
        )
    if not any(k in header for k in d.csv_keys):
        raise Invalid(f"The CSV needs a key column: {' or '.join(d.csv_keys)}.")


def _row_values(
    d: Dictionary, n: int, row: dict[str, str]
) -> tuple[dict[str, Any], list[RowError]]:
    """Field values of one row with dates turned into days from the row's index date."""
    errors: list[RowError] = []
    values: dict[str, Any] = {k: v for k, v in row.items() if k in d.names}
    index_text = (row.get(d.index_date_column) or "").strip()
    index_date = parse_date(index_text) if index_text else None
    if index_text and index_date is None:
        errors.append(
            RowError(
                n, d.index_date_column, index_text, "date", "not a date; use YYYY-MM-DD or YYYYMMDD"
            )
        )
    for column, f in d.date_columns().items():
        text = (row.get(column) or "").strip()
        if not text:
            continue
        if (row.get(f.name) or "").strip():
            errors.append(
                RowError(n, column, text, "one_of", f"give either {column} or {f.name}, not both")
            )
            continue
        when = parse_date(text)
        if when is None:
            errors.append(
                RowError(n, column, text, "date", "not a date; use YYYY-MM-DD or YYYYMMDD")
            )
        elif index_date is None and not index_text:
            errors.append(
                RowError(
                    n,
                    column,
                    text,
                    "index_date_required",
                    f"a date needs {d.index_date_column} in the same row",
                )
            )
        elif index_date is not None:
            values[f.name] = (when - index_date).days
    return values, errors


def _site_key(text: str) -> str:
    """Site names compare on letters and digits only: 'site-01' names facility code SITE01."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _site_lookup(session: Session) -> dict[str, Facility]:
    found: dict[str, Facility] = {}
    for f in session.scalars(select(Facility)):
        found[_site_key(f.name)] = f
        found[_site_key(f.code)] = f
    return found


def import_csv(
    session: Session,
    facility: Facility | None,
    path: Path,
    actor: Actor,
    *,
    skip_invalid: bool = False,
    rejects_path: Path | None = None,
) -> ImportResult:
    """Validate every row, then import all of them, or (``skip_invalid``) the valid ones."""
    d = load_dictionary()
    result = ImportResult()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"Cannot read {path.name} as UTF-8 CSV: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = list(reader.fieldnames or [])
    _check_header(d, header)
    sites = _site_lookup(session)
    site_column = d.csv_site_column if d.csv_site_column in header else ""
    if facility is None and not site_column:
        if len({f.id for f in sites.values()}) != 1:
            raise Invalid(
                f"Name the facility (--facility), or give a {d.csv_site_column!r} column: "
                "this node has several facilities (or none)."
            )
        facility = next(iter(sites.values()))
    good: list[tuple[Patient, dict[str, Any]]] = []
    bad: list[tuple[dict[str, str], list[RowError]]] = []
    seen: dict[int, int] = {}
    for n, row in enumerate(reader, start=2):
        result.rows += 1
        if None in row:
            err = RowError(
                n, "", "", "columns", f"row has more cells than the {len(header)} header columns"
            )
            bad.append((row, [err]))
            continue
        row = {k: (v or "") for k, v in row.items()}
        for alias, name in d.csv_aliases.items():
            if alias in row and name not in row:
                row[name] = row[alias]
        errors: list[RowError] = []
        patient: Patient | None = None
        row_facility = facility
        site = row.get(site_column, "").strip() if site_column else ""
        if site:
            row_facility = sites.get(_site_key(site))
            if row_facility is None:
                errors.append(
                    RowError(
                        n,
                        site_column,
                        site,
                        "known_site",
                        "no facility of this node has this name or code",
                    )
                )
            elif facility is not None and row_facility.id != facility.id:
                result.skipped += 1
                continue
        elif facility is None:
            errors.append(
                RowError(
                    n,
                    site_column,
                    "",
                    "site_required",
                    "give the row's site, or import with --facility",
                )
            )
        for key in d.csv_keys:
            value = row.get(key, "").strip()
            if not value or row_facility is None:
                continue
            found = _find_patient(session, row_facility, key, value)
            if found is None:
                errors.append(
                    RowError(
                        n,
                        key,
                        value,
                        "known_case",
                        f"no case at {row_facility.name} has this {key}",
                    )
                )
            elif patient is not None and found.id != patient.id:
                errors.append(
                    RowError(
                        n,
                        key,
                        value,
                        "same_case",
                        "patient_id and accession_number name different cases",
                    )
                )
            else:
                patient = found
        if patient is None and not errors:
            errors.append(
                RowError(
                    n,
                    "/".join(d.csv_keys),
                    "",
                    "key_required",
                    "each row needs a patient_id or accession_number",
                )
            )
        if patient is not None and patient.id in seen:
            errors.append(
                RowError(
                    n, "patient_id", "", "duplicate_case", f"same case as row {seen[patient.id]}"
                )
            )
        values, date_errors = _row_values(d, n, row)
        errors.extend(date_errors)
        merged: dict[str, Any] = dict(values)  # checked even when the case is unknown
        if patient is not None:
            seen.setdefault(patient.id, n)
            merged = dict(clinical_of(session, patient))
            merged.update(values)
            flag_of = {f.name: flag for flag, f in d.field_by_flag().items()}
            for name in values:  # a new top-coded value recomputes its flag
                if name in flag_of and flag_of[name] not in values:
                    merged[flag_of[name]] = None
        data, field_errors = d.validate(merged)
        for e in field_errors:
            column = e.field
            alias_col = next((a for a, f in d.csv_aliases.items() if f == column), None)
            if column not in header and alias_col in header:
                column = alias_col or column
            if column not in row:  # value came from a date column
                column = next((c for c, f in d.date_columns().items() if f.name == e.field), column)
            errors.append(
                RowError(n, column, row.get(column, e.value) or e.value, e.rule, e.message)
            )
        if errors:
            bad.append((row, errors))
        elif patient is not None:
            good.append((patient, data))
    result.errors = [e for _, errs in bad for e in errs]
    result.rejected = len(bad)
    if bad and rejects_path is not None:
        _write_rejects(rejects_path, header, bad)
        result.rejects_path = rejects_path
    if bad and not skip_invalid:
        record(
            session,
            actor,
            "clinical.import",
            "facility",
            str(facility.id) if facility else "",
            outcome="failure",
            detail={"rows": result.rows, "rejected": len(bad)},
        )
        return result
    for patient, data in good:
        store_clinical(session, actor, patient, data)
    result.imported = len(good)
    result.committed = True
    record(
        session,
        actor,
        "clinical.import",
        "facility",
        str(facility.id) if facility else "",
        detail={"rows": result.rows, "imported": result.imported, "rejected": len(bad)},
    )
    return result


def _write_rejects(
    path: Path, header: list[str], bad: list[tuple[dict[str, str], list[RowError]]]
) -> None:
    """The rejected rows as they were, plus their line number and every error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", *header, "errors"])
        for row, errors in bad:
            writer.writerow(
                [
                    errors[0].row,
                    *(row.get(c, "") for c in header),
                    "; ".join(f"{e.column}: {e.message} [{e.rule}]" for e in errors),
                ]
            )
