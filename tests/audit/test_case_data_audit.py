"""Case data through both doors: whose facility it joins, and the audit trail it leaves.

STOW-RS instances belong to the token's facility, C-STORE instances to the calling AE's
facility. Every read and write (STOW, QIDO, WADO, C-STORE, C-FIND) leaves an audit event with
who, what, when and from where (the HTTP client address, the DICOM peer's address), and no
audit event carries a PHI value of the instances sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.audit.models import AuditEvent
from pair.core.node import Node
from pair.db.throwaway import free_port
from pair.repository.dimse import DimseServer, start_dimse_server
from pair.web.app import create_app
from tests.conftest import c_find
from tests.factories import FAKE_PATIENT, ct_instance, to_bytes

BOUNDARY = "auditboundary7"
CTYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _multipart(*parts: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def world(node: Node) -> Iterator[tuple[dict[str, str], dict[str, int], DimseServer]]:
    with node.db.session() as s:
        fa = accounts.create_facility(s, "Hospital A", "HOSPA")
        fb = accounts.create_facility(s, "Hospital B", "HOSPB")
        tokens = {}
        for name, fac, role in (("dm_a", fa, "data-manager"), ("admin_b", fb, "admin")):
            user = accounts.create_user(s, fac, name, role)
            tokens[name] = accounts.create_token(s, user)[1]
        accounts.add_ae_title(s, fa, "PEER_A")
        accounts.add_ae_title(s, fb, "PEER_B")
        facilities = {"A": fa.id, "B": fb.id}
    dimse = start_dimse_server(node, host="127.0.0.1", port=free_port(), ae_title="PAIR")
    yield tokens, facilities, dimse
    dimse.shutdown()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _c_store_and_find(port: int, calling: str, ds: Dataset) -> list[Dataset]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="PAIR")
    assert assoc.is_established
    assert int(assoc.send_c_store(ds).Status) == 0x0000
    _, found = c_find(assoc, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID="")
    assoc.release()
    return found


def test_facility_of_case_data_and_its_audit_trail(
    node: Node, world: tuple[dict[str, str], dict[str, int], DimseServer]
) -> None:
    tokens, facilities, dimse = world
    started = datetime.now(UTC) - timedelta(seconds=1)
    client = TestClient(create_app(node))
    stow_a = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    stow_b = ct_instance(
        study_uid=generate_uid(), series_uid=generate_uid(), patient={"PatientID": "MRN_B_STOW"}
    )
    dimse_b = ct_instance(
        study_uid=generate_uid(), series_uid=generate_uid(), patient={"PatientID": "MRN_B_DIMSE"}
    )
    originals = [stow_a, stow_b, dimse_b]

    for user, ds in (("dm_a", stow_a), ("admin_b", stow_b)):
        r = client.post(
            "/dicomweb/studies",
            content=_multipart(to_bytes(ds)),
            headers={**_auth(tokens[user]), "Content-Type": CTYPE},
        )
        assert r.status_code == 200, r.text
    found = _c_store_and_find(dimse.server.server_address[1], "PEER_B", dimse_b)

    # STOW-RS: the token's facility; C-STORE: the calling AE's facility (B, not A)
    seen_a = client.get("/dicomweb/studies", headers=_auth(tokens["dm_a"])).json()
    seen_b = client.get("/dicomweb/studies", headers=_auth(tokens["admin_b"])).json()
    ids_a = sorted(pydicom.Dataset.from_json(d).PatientID for d in seen_a)
    ids_b = sorted(pydicom.Dataset.from_json(d).PatientID for d in seen_b)
    assert len(ids_a) == 1 and ids_a[0].startswith("HOSPA-")
    assert len(ids_b) == 2 and all(i.startswith("HOSPB-") for i in ids_b)
    assert sorted(str(d.PatientID) for d in found) == ids_b  # C-FIND sees facility B only

    study_b = pydicom.Dataset.from_json(seen_b[0]).StudyInstanceUID
    r = client.get(f"/dicomweb/studies/{study_b}/metadata", headers=_auth(tokens["admin_b"]))
    assert r.status_code == 200

    with node.db.session() as s:
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    case_events = [e for e in events if e.action.split(".")[0] in {"instance", "qido", "wado"}]
    case_events += [e for e in events if e.action.startswith("cfind.")]

    def one(action: str, who: str) -> AuditEvent:
        hits = [e for e in case_events if e.action == action and e.user_name == who]
        assert hits, f"no {action} event by {who}: {[(e.action, e.user_name) for e in events]}"
        return hits[-1]

    # who, what, when, from where: HTTP client address and DICOM peer address
    for action, who, facility, source in (
        ("instance.store", "dm_a", "A", "testclient"),
        ("instance.store", "admin_b", "B", "testclient"),
        ("instance.store", "AE:PEER_B", "B", "dimse:127.0.0.1"),
        ("cfind.study", "AE:PEER_B", "B", "dimse:127.0.0.1"),
        ("qido.studies", "dm_a", "A", "testclient"),
        ("qido.studies", "admin_b", "B", "testclient"),
        ("wado.metadata", "admin_b", "B", "testclient"),
    ):
        event = one(action, who)
        assert event.facility_id == facilities[facility], (action, who)
        assert event.source == source, (action, who, event.source)
        at = event.at if event.at.tzinfo else event.at.replace(tzinfo=UTC)
        assert started <= at <= datetime.now(UTC) + timedelta(seconds=1)
        assert event.outcome == "success"
    assert one("wado.metadata", "admin_b").object_id == study_b

    # never a PHI value (nor an original UID) in any audit event
    phi = [v for k, v in FAKE_PATIENT.items() if k != "PatientSex"]
    phi += ["MRN_B_STOW", "MRN_B_DIMSE", "JOHNATHAN", "Elm Street"]
    phi += [str(ds.StudyInstanceUID) for ds in originals]
    phi += [str(ds.SOPInstanceUID) for ds in originals]
    for event in events:
        text = " ".join(
            str(v)
            for v in (
                event.user_name,
                event.action,
                event.object_type,
                event.object_id,
                event.source,
                event.detail,
            )
        )
        for value in phi:
            assert value not in text, f"PHI {value!r} in audit event {event.action}"
