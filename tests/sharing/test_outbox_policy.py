"""The diff-based outbox: what each sharing policy queues, manual shares, no duplicates on a
second pass, and nothing the PHI scanner quarantined (real ingest pipeline, both databases)."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.clinical.dictionary import load_dictionary
from pair.clinical.service import store_clinical
from pair.core.errors import Forbidden, Invalid, NotFound
from pair.core.node import Node
from pair.reporting.models import Report, ReportVersion
from pair.repository.ingest import Outcome, Payload, ingest_batch
from pair.repository.models import Instance, Patient, QuarantineItem, Study
from pair.sharing import outbox
from pair.sharing.models import OutboxItem
from tests.factories import ct_instance, leaky_instance, to_bytes


def _ingest(node: Node, facility_id: int, mrn: str, n: int = 2) -> tuple[int, set[str]]:
    """A case of ``n`` CT instances through the real pipeline: (patient id, stored SOP UIDs)."""
    study, series = generate_uid(), generate_uid()
    datasets = [
        ct_instance(study_uid=study, series_uid=series, index=i, patient={"PatientID": mrn})
        for i in range(1, n + 1)
    ]
    actor = Actor.system("test", facility_id=facility_id)
    payloads = [Payload(to_bytes(ds), str(i)) for i, ds in enumerate(datasets)]
    results = ingest_batch(node, facility_id, payloads, "test", actor)
    assert all(r.outcome is Outcome.STORED for r in results)
    with node.db.session() as s:
        uid = results[0].study_uid
        patient_pk = s.scalar(select(Study.patient_pk).where(Study.study_uid == uid))
        assert patient_pk is not None
    return patient_pk, {r.sop_instance_uid for r in results}


def _keys(node: Node, facility_id: int, kind: str) -> set[str]:
    with node.db.session() as s:
        return set(
            s.scalars(
                select(OutboxItem.object_key).where(
                    OutboxItem.facility_id == facility_id, OutboxItem.kind == kind
                )
            )
        )


def _enqueue(node: Node, facility_id: int) -> dict[str, int]:
    with node.db.session() as s:
        return outbox.enqueue_pending(s, facility_id)


def test_policies_queue_what_they_share_and_never_the_quarantine(node: Node) -> None:
    with node.db.session() as s:
        hosp_a = accounts.create_facility(s, "Hospital A", "HOSPA")
        hosp_b = accounts.create_facility(s, "Hospital B", "HOSPB")
        fa, fb = hosp_a.id, hosp_b.id
        admin_a = accounts.actor_for(accounts.create_user(s, hosp_a, "adm-a", "admin"))
        rad_a = accounts.actor_for(accounts.create_user(s, hosp_a, "rad-a", "radiologist"))
        admin_b = accounts.actor_for(accounts.create_user(s, hosp_b, "adm-b", "admin"))
    positive, positive_uids = _ingest(node, fa, "MRN-POS")
    reported, reported_uids = _ingest(node, fa, "MRN-REP")
    actor = Actor.system("test", facility_id=fa)
    (leak,) = ingest_batch(node, fa, [Payload(to_bytes(leaky_instance()), "x")], "test", actor)
    assert leak.outcome is Outcome.QUARANTINED
    with node.db.session() as s:
        data, errors = load_dictionary().validate(
            {"test_method": "RT-PCR", "test_result_text": "Positive"}
        )
        assert not errors
        patient = s.get(Patient, positive)
        assert patient is not None
        store_clinical(s, Actor.system(), patient, data)
        study_uid = s.scalar(select(Study.study_uid).where(Study.patient_pk == reported))
        report = Report(
            facility_id=fa,
            study_uid=study_uid,
            module_id="corads",
            module_version="1",
            status="final",
        )
        s.add(report)
        s.flush()
        s.add(ReportVersion(report_id=report.id, version=1, status="final", module_version="1"))
        quarantined = set(s.scalars(select(QuarantineItem.sop_instance_uid)))
        stored = set(s.scalars(select(Instance.sop_instance_uid)))
    assert quarantined and not quarantined & stored

    # default: a hospital shares nothing until its admin opts in
    assert sum(_enqueue(node, fa).values()) == 0
    with node.db.session() as s:
        assert outbox.get_policy(s, fa) == "none"
        with pytest.raises(Forbidden):
            outbox.set_policy(s, rad_a, "all")
        with pytest.raises(Invalid):
            outbox.set_policy(s, admin_a, "everything")
        outbox.set_policy(s, admin_a, "covid_positive")
    _enqueue(node, fa)
    assert _keys(node, fa, "instance") == positive_uids
    assert len(_keys(node, fa, "clinical")) == 1
    assert _keys(node, fa, "report") == set()

    with node.db.session() as s:
        outbox.set_policy(s, admin_a, "reported")
    _enqueue(node, fa)
    assert _keys(node, fa, "instance") == positive_uids | reported_uids
    assert len(_keys(node, fa, "report")) == 1

    with node.db.session() as s:
        outbox.set_policy(s, admin_a, "all")
    assert sum(_enqueue(node, fa).values()) == 0  # everything stored is queued already, once
    assert _keys(node, fa, "instance") == stored
    assert not _keys(node, fa, "instance") & quarantined

    # manual share: another facility's admin cannot reach the case (404), nothing queued for B
    with node.db.session() as s, pytest.raises(NotFound):
        outbox.share_case(s, admin_b, positive)
    assert _keys(node, fb, "instance") == set()


def test_manual_share_sends_one_case_whatever_the_policy(node: Node) -> None:
    with node.db.session() as s:
        fa = accounts.create_facility(s, "Hospital A", "HOSPA")
        dm = accounts.actor_for(accounts.create_user(s, fa, "dm-a", "data-manager"))
        fa_id = fa.id
    case, uids = _ingest(node, fa_id, "MRN-ONE")
    _ingest(node, fa_id, "MRN-TWO")
    with node.db.session() as s:
        added = outbox.share_case(s, dm, case)
        assert added["instance"] == 2
        assert outbox.share_case(s, dm, case)["instance"] == 0
    assert _keys(node, fa_id, "instance") == uids
    with node.db.session() as s:
        status = outbox.sharing_status(s, dm)
        assert status.policy == "none"
        assert status.counts["instance"] == {"queued": 2}


def test_feedback_of_finished_runs_is_queued_once_the_facility_shares(node: Node) -> None:
    from pair.evaluation.runs.models import EvaluationRun, RunStatus

    with node.db.session() as s:
        fa = accounts.create_facility(s, "Hospital A", "HOSPA").id
        done = EvaluationRun(
            facility_id=fa,
            algorithm_id="demo",
            algorithm_version="1.0.0",
            truth_source="clinical",
            status=RunStatus.DONE,
        )
        running = EvaluationRun(
            facility_id=fa,
            algorithm_id="demo",
            algorithm_version="1.0.0",
            truth_source="clinical",
            status=RunStatus.RUNNING,
        )
        s.add_all([done, running])
        s.flush()
        done_id = done.id
    assert _enqueue(node, fa)["feedback"] == 0  # policy none: nothing, not even aggregates
    with node.db.session() as s:
        outbox.set_policy(s, Actor.system(facility_id=fa), "reported", fa)
    assert _enqueue(node, fa)["feedback"] == 1
    assert _keys(node, fa, "feedback") == {str(done_id)}


def test_cases_pulled_from_the_hub_are_never_sent_back(node: Node) -> None:
    """The feed follower marks a pulled study not shareable; the outbox must skip it, or two
    following sites would echo each other's cases to the hub for ever."""
    with node.db.session() as s:
        fa = accounts.create_facility(s, "Hospital A", "HOSPA")
        fa_id = fa.id
        outbox.set_policy(s, Actor.system(facility_id=fa_id), "all", fa_id)
    _own, own_uids = _ingest(node, fa_id, "MRN-OWN")
    pulled, _ = _ingest(node, fa_id, "MRN-PULLED")
    with node.db.session() as s:
        s.execute(
            Study.__table__.update().where(Study.patient_pk == pulled).values(shareable=False)
        )
    _enqueue(node, fa_id)
    assert _keys(node, fa_id, "instance") == own_uids


def test_a_pulled_case_is_never_committed_shareable(node: Node) -> None:
    """The follower ingests a hub case with ``shareable=False``: its study is not shareable in
    the very transaction that stores it (a later update left a window in which the outbox, or
    anyone counting a site's own studies, saw a pulled case as the site's own)."""
    with node.db.session() as s:
        fa_id = accounts.create_facility(s, "Hospital A", "HOSPA").id
        outbox.set_policy(s, Actor.system(facility_id=fa_id), "all", fa_id)
    study, series = generate_uid(), generate_uid()
    payloads = [
        Payload(to_bytes(ct_instance(study_uid=study, series_uid=series, index=i)), str(i))
        for i in (1, 2)
    ]
    actor = Actor.system("feed:HOSPB", facility_id=fa_id)
    results = ingest_batch(node, fa_id, payloads, "hub:HOSPB", actor, shareable=False)
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.STORED]
    with node.db.session() as s:
        assert (
            s.scalar(select(Study.shareable).where(Study.study_uid == results[0].study_uid))
            is False
        )
    _enqueue(node, fa_id)
    assert _keys(node, fa_id, "instance") == set()
    again = ingest_batch(node, fa_id, payloads, "hub:HOSPB", actor, shareable=False)
    assert [r.outcome for r in again] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
