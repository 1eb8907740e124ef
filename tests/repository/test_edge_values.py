"""Values PostgreSQL refuses but SQLite stores (NUL bytes, over-long text, integers beyond
int4) are validated or normalised at the edge, identically on both databases: a sanitised
index value where the standard allows it, a precise refusal naming the element where it does
not, never a 500 or a DIMSE 0xC211, and no file left behind by a failed batch."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy import func, select, text

from pair.accounts import service
from pair.accounts.models import Facility
from pair.audit.models import AuditEvent
from pair.audit.service import Actor
from pair.core.node import Node
from pair.db.throwaway import free_port
from pair.db.values import column_int
from pair.repository.dimse import DimseServer
from pair.repository.ingest import Payload, ingest_batch
from pair.repository.models import Instance, Series, Study
from tests.conftest import admin_test_client, c_find
from tests.factories import ct_instance, to_bytes

CTYPE = 'multipart/related; type="application/dicom"; boundary=edge'
PASSWORD = "Ward7-Lumen-Quartz"


def _body(*datasets: Dataset) -> bytes:
    parts = [
        b"--edge\r\nContent-Type: application/dicom\r\n\r\n" + to_bytes(ds) + b"\r\n"
        for ds in datasets
    ]
    return b"".join(parts) + b"--edge--\r\n"


def _files(node: Node) -> list[Path]:
    s = node.settings
    return [
        p
        for root in (s.storage_dir, s.quarantine_dir, s.tmp_dir)
        if root.exists()
        for p in root.rglob("*")
        if p.is_file()
    ]


@pytest.fixture
def app(node: Node) -> tuple[TestClient, dict[str, dict[str, str]]]:
    return admin_test_client(node)


def test_index_values_are_sanitised_not_refused(
    node: Node, app: tuple[TestClient, dict[str, dict[str, str]]]
) -> None:
    client, headers = app
    study = generate_uid()
    first = ct_instance(study_uid=study, series_uid=generate_uid(), index=1, size=8)
    first.SeriesDescription = "AXIAL\x00 5MM"
    first.StudyID = "7\x001"
    # ModalitiesInStudy: 12 series of distinct 16-character modalities (CS max length)
    others = [
        ct_instance(
            study_uid=study, series_uid=generate_uid(), index=1, size=8, modality=f"MODALITY{i:08d}"
        )
        for i in range(12)
    ]
    r = client.post(
        "/dicomweb/studies",
        content=_body(first, *others),
        headers={**headers["dm"], "Content-Type": CTYPE},
    )
    assert r.status_code == 200, r.text
    with node.db.session() as s:
        row = s.scalars(select(Study)).one()
        assert "\x00" not in row.study_id
        assert len(row.modalities) <= 128 and row.modalities.split("\\")[0] == "CT"
        assert all(len(m) == 16 or m == "CT" for m in row.modalities.split("\\"))
        assert row.num_instances == 13 and row.num_series == 13
        descriptions = set(s.scalars(select(Series.series_description)))
        assert not any("\x00" in d for d in descriptions)
    # IS beyond int4 (the IS range): refused naming the element, on both databases
    big = ct_instance(study_uid=study, series_uid=generate_uid(), index=1, size=8)
    big.InstanceNumber = "3000000000"
    r = client.post(
        "/dicomweb/studies", content=_body(big), headers={**headers["dm"], "Content-Type": CTYPE}
    )
    assert r.status_code == 409, r.text
    assert "InstanceNumber" in r.json()["00081198"]["Value"][0]["00000902"]["Value"][0]
    assert column_int("3000000000") is None and column_int("-17") == -17  # index defence
    found = client.get(
        "/dicomweb/studies", params={"ModalitiesInStudy": "CT"}, headers=headers["dm"]
    )
    assert found.status_code == 200 and len(found.json()) == 1
    long_query = client.get(
        "/dicomweb/studies", params={"ModalitiesInStudy": "X" * 300}, headers=headers["dm"]
    )
    assert long_query.status_code in (200, 204), long_query.text


@pytest.mark.parametrize("keyword", ["PatientID", "PatientName", "IssuerOfPatientID"])
def test_nul_in_an_identity_element_is_refused_naming_it(
    node: Node, app: tuple[TestClient, dict[str, dict[str, str]]], keyword: str
) -> None:
    client, headers = app
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=8)
    setattr(ds, keyword, "MRN\x0012")
    r = client.post(
        "/dicomweb/studies", content=_body(ds), headers={**headers["dm"], "Content-Type": CTYPE}
    )
    assert r.status_code == 409, r.text
    failed = r.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0xA900]
    assert keyword in failed["00000902"]["Value"][0]
    assert _files(node) == []
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0


@pytest.fixture
def dimse(node: Node) -> Iterator[int]:
    with node.db.session() as s:
        facility = service.create_facility(s, "Hospital A", "HOSPA")
        service.add_ae_title(s, facility, "EDGESCU")
    port = free_port()
    server = DimseServer(node, "127.0.0.1", port, "PAIR")
    yield port
    server.shutdown()
    server.server.server_close()


def test_c_store_refuses_nul_identity_and_sanitises_the_rest(node: Node, dimse: int) -> None:
    ae = AE(ae_title="EDGESCU")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", dimse, ae_title="PAIR")
    assert assoc.is_established
    try:
        bad = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=8)
        bad.AccessionNumber = "ACC\x00991"
        status = assoc.send_c_store(bad)
        assert status.Status == 0xA900
        assert "AccessionNumber" in status.ErrorComment
        good = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=8)
        good.StudyDescription = "CHEST\x00"
        good.SeriesDescription = "AX\x00IAL"
        assert assoc.send_c_store(good).Status == 0x0000
        big = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=8)
        big.InstanceNumber = str(2**31)
        status = assoc.send_c_store(big)
        assert status.Status == 0xC000 and "InstanceNumber" in status.ErrorComment
        final, found = c_find(assoc, QueryRetrieveLevel="STUDY", PatientID="PAT\x00X")
        assert final == 0xA900 and found == []
        final, found = c_find(assoc, QueryRetrieveLevel="STUDY", StudyInstanceUID="")
        assert final == 0x0000 and len(found) == 1
    finally:
        assoc.release()
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 1
    assert len(_files(node)) == 1


@pytest.mark.parametrize(
    "url",
    [
        "/dicomweb/studies?PatientID=%00",
        "/dicomweb/studies?StudyDescription=a%00b",
        "/dicomweb/studies/1.2.3%00/series",
        "/api/cases?text=%00",
        "/api/cases?text=ab%00cd",
    ],
)
def test_nul_anywhere_in_the_url_is_a_400(
    app: tuple[TestClient, dict[str, dict[str, str]]], url: str
) -> None:
    client, headers = app
    r = client.get(url, headers=headers["dm"])
    assert r.status_code == 400, r.text
    assert "NUL" in r.json()["message"]


def test_over_long_uid_in_the_url_is_audited_truncated(
    node: Node, app: tuple[TestClient, dict[str, dict[str, str]]]
) -> None:
    client, headers = app
    uid = "1." + "2" * 298
    for path in (f"/dicomweb/studies/{uid}/metadata", f"/dicomweb/studies/{uid}"):
        r = client.get(path, headers=headers["dm"])
        assert r.status_code == 404, r.text
    with node.db.session() as s:
        ids = list(s.scalars(select(AuditEvent.object_id)))
    assert ids and all(len(i) <= 128 for i in ids)


def test_audit_record_truncates_and_drops_nul(node: Node) -> None:
    from pair.audit.service import record

    actor = Actor(None, "u\x00" + "n" * 400, None, "admin", "s" * 300)
    with node.db.session() as s:
        record(s, actor, "a" * 100, "t" * 100, "o\x00" * 200, outcome="failure-long")
    with node.db.session() as s:
        event = s.scalars(select(AuditEvent)).one()
    assert "\x00" not in event.user_name + event.object_id
    assert len(event.user_name) <= 128 and len(event.object_id) <= 128
    assert len(event.action) <= 64 and len(event.source) <= 128


def test_nul_in_the_login_name_is_a_401(
    node: Node, app: tuple[TestClient, dict[str, dict[str, str]]]
) -> None:
    client, _ = app
    with node.db.session() as s:
        facility = s.scalars(select(Facility)).first()
        assert facility is not None
        service.create_user(s, facility, "nurse", "radiologist", PASSWORD)
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert found is not None
    csrf = found.group(1)
    form = {"username": "nur\x00se", "password": PASSWORD, "csrf_token": csrf}
    r = client.post("/login", data=form, follow_redirects=False)
    assert r.status_code == 401, r.text
    form = {"username": "nurse", "password": PASSWORD + "\x00", "csrf_token": csrf}
    assert client.post("/login", data=form, follow_redirects=False).status_code == 401
    ok = {"username": "nurse", "password": PASSWORD, "csrf_token": csrf}
    assert client.post("/login", data=ok, follow_redirects=False).status_code == 303


def _fail_instance_inserts(node: Node) -> None:
    """A real database failure in stage two: a trigger that refuses every index row."""
    with node.db.engine.begin() as c:
        if node.db.engine.dialect.name == "sqlite":
            c.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON instance "
                    "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
                )
            )
        else:
            c.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'refused by test'; END $$"
                )
            )
            c.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON instance "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )


def test_failed_batch_leaves_no_files(node: Node) -> None:
    with node.db.session() as s:
        facility_id = service.create_facility(s, "Hospital A", "HOSPA").id
    study = generate_uid()
    kept = ct_instance(study_uid=study, series_uid=generate_uid(), index=1, size=8)
    actor = Actor.system("test", facility_id)
    first = ingest_batch(node, facility_id, [Payload(to_bytes(kept))], "test", actor)
    assert first[0].accepted
    assert len(_files(node)) == 1
    _fail_instance_inserts(node)
    series = generate_uid()
    batch = [
        Payload(to_bytes(ct_instance(study_uid=study, series_uid=series, index=i, size=8)))
        for i in range(4)
    ]
    batch.append(Payload(to_bytes(kept)))  # already stored: its file must stay
    with pytest.raises(Exception, match="refused by test"):
        ingest_batch(node, facility_id, batch, "test", actor)
    assert len(_files(node)) == 1, "orphan files after a failed batch"
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 1


def test_c_store_whose_commit_fails_is_0xc001_and_leaves_no_file(node: Node, dimse: int) -> None:
    _fail_instance_inserts(node)
    ae = AE(ae_title="EDGESCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", dimse, ae_title="PAIR")
    assert assoc.is_established
    try:
        ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=8)
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == 0xC001, status
    assert _files(node) == []
