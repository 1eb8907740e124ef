"""The site-private mapping store: original patient -> pseudonym and date shift, original
study -> de-identified study UID. ``SqlMappingStore`` works inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import event, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pair.deid.models import PrivatePatientIdentity, PrivateStudyIdentity, PseudonymCounter


@dataclass(frozen=True)
class PatientMapping:
    pseudonym: str
    date_shift_days: int


class MappingStore(Protocol):
    """Where pseudonyms and date shifts live; the same original key always gets the same one."""

    def patient(
        self,
        key: str,
        *,
        prefix: str,
        date_shift_days: int,
        patient_id: str,
        patient_name: str,
        issuer: str,
    ) -> PatientMapping:
        """Return the mapping for ``key``, creating ``<prefix>-<counter>`` on first sight."""
        ...

    def record_study(
        self, *, original_study_uid: str, original_accession: str, study_uid: str, pseudonym: str
    ) -> None:
        """Remember which original study (and accession number) a de-identified study is."""
        ...


def format_pseudonym(prefix: str, number: int) -> str:
    return f"{prefix}-{number:06d}"


class InMemoryMappingStore:
    """A dict-backed store for tests and one-off runs without a node."""

    def __init__(self) -> None:
        self.patients: dict[str, PatientMapping] = {}
        self.studies: dict[str, tuple[str, str, str]] = {}
        self._next = 1

    def patient(
        self,
        key: str,
        *,
        prefix: str,
        date_shift_days: int,
        patient_id: str,
        patient_name: str,
        issuer: str,
    ) -> PatientMapping:
        found = self.patients.get(key)
        if found is None:
            found = PatientMapping(format_pseudonym(prefix, self._next), date_shift_days)
            self._next += 1
            self.patients[key] = found
        return found

    def record_study(
        self, *, original_study_uid: str, original_accession: str, study_uid: str, pseudonym: str
    ) -> None:
        self.studies.setdefault(study_uid, (original_study_uid, original_accession, pseudonym))


class SqlMappingStore:
    """Mapping store on the ``private_*`` tables of one facility.

    Runs in the caller's session/transaction. The counter is incremented with a single
    ``UPDATE ... RETURNING`` (a row lock on PostgreSQL; SQLite's write lock serializes writers);
    a concurrent first sighting of the same patient loses the unique-key race inside a savepoint
    and re-reads the winner's row, so both callers get the same pseudonym.
    """

    def __init__(self, session: Session, facility_id: int) -> None:
        self.session = session
        self.facility_id = facility_id
        # Rollbacks (savepoints included) seen in the session: a mapping read or created
        # before one may be gone, so callers that cache mappings start afresh when it changes.
        self.rollbacks = 0
        event.listen(session, "after_soft_rollback", self._rolled_back)

    def _rolled_back(self, session: Session, previous_transaction: object) -> None:
        self.rollbacks += 1

    def _find(self, key: str) -> PatientMapping | None:
        row = self.session.execute(
            select(PrivatePatientIdentity.pseudonym, PrivatePatientIdentity.date_shift_days).where(
                PrivatePatientIdentity.facility_id == self.facility_id,
                PrivatePatientIdentity.original_key == key,
            )
        ).first()
        return None if row is None else PatientMapping(row[0], row[1])

    def _next_number(self) -> int:
        for _ in range(3):
            stmt = (
                update(PseudonymCounter)
                .where(PseudonymCounter.facility_id == self.facility_id)
                .values(next_value=PseudonymCounter.next_value + 1)
                .returning(PseudonymCounter.next_value)
                .execution_options(synchronize_session=False)
            )
            value = self.session.execute(stmt).scalar_one_or_none()
            if value is not None:
                return int(value) - 1
            try:
                with self.session.begin_nested():
                    self.session.add(PseudonymCounter(facility_id=self.facility_id, next_value=2))
                return 1
            except IntegrityError:
                continue  # another transaction created the counter first: increment it
        raise RuntimeError("could not allocate a pseudonym number")

    def patient(
        self,
        key: str,
        *,
        prefix: str,
        date_shift_days: int,
        patient_id: str,
        patient_name: str,
        issuer: str,
    ) -> PatientMapping:
        found = self._find(key)
        if found is not None:
            return found
        number = self._next_number()
        mapping = PatientMapping(format_pseudonym(prefix, number), date_shift_days)
        try:
            with self.session.begin_nested():
                self.session.execute(
                    insert(PrivatePatientIdentity).values(
                        facility_id=self.facility_id,
                        original_key=key,
                        original_patient_id=patient_id[:128],
                        original_patient_name=patient_name[:256],
                        original_issuer=issuer[:128],
                        pseudonym=mapping.pseudonym,
                        date_shift_days=date_shift_days,
                    )
                )
        except IntegrityError:
            found = self._find(key)  # lost the race: the winner's pseudonym is the one
            if found is None:
                raise
            return found
        return mapping

    def record_study(
        self, *, original_study_uid: str, original_accession: str, study_uid: str, pseudonym: str
    ) -> None:
        exists = self.session.scalar(
            select(PrivateStudyIdentity.id).where(PrivateStudyIdentity.study_uid == study_uid)
        )
        if exists is not None:
            return
        try:
            with self.session.begin_nested():
                self.session.execute(
                    insert(PrivateStudyIdentity).values(
                        facility_id=self.facility_id,
                        original_study_uid=original_study_uid[:64],
                        original_accession_number=original_accession[:64],
                        study_uid=study_uid,
                        pseudonym=pseudonym,
                    )
                )
        except IntegrityError:
            pass  # recorded concurrently by another instance of the same study
