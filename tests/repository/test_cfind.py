"""Study Root C-FIND on a live `pair serve`: matching, return keys, isolation, cancel, failures.

Driven by pynetdicom as the SCU (PS3.4 Annex C); dcmtk's findscu is exercised in test_dimse.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy import select

from pair.accounts import service
from pair.accounts.models import Facility
from pair.core.config import get_settings
from pair.core.node import open_node
from pair.repository.models import Instance, Series, Study
from tests.conftest import LiveNode, c_find
from tests.factories import ct_instance

pytestmark = pytest.mark.integration
FIND = StudyRootQueryRetrieveInformationModelFind


def _associate(live: LiveNode, calling: str) -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(FIND)
    ae.add_requested_context(CTImageStorage)
    return ae.associate("127.0.0.1", live.dicom_port, ae_title=live.ae_title)


@pytest.fixture
def peer(live: LiveNode) -> Iterator[Association]:
    """Facility A's peer, after two patients' studies were stored over STOW-RS."""
    sa, sb = generate_uid(), generate_uid()
    se_a = generate_uid()
    items = [ct_instance(study_uid=sa, series_uid=se_a, index=i) for i in (1, 2, 3)]
    items.append(
        ct_instance(
            study_uid=sb,
            series_uid=generate_uid(),
            study_date="20190310",
            patient={"PatientID": "MRN0000777", "PatientName": "ROE^RICHARD"},
            description="THORAX ÜBERSICHT",
        )
    )
    items[-1].SpecificCharacterSet = "ISO_IR 192"
    keep_descriptions = (
        "options: {retain_longitudinal_modified_dates: true, clean_descriptors: true}"
    )
    r = httpx.put(
        live.base_url + "/api/deid/profile",
        content=keep_descriptions,
        headers={**live.headers("admin_a"), "Content-Type": "text/plain"},
    )
    assert r.status_code == 200, r.text  # the default removes descriptions (Basic Profile)
    dw = DICOMwebClient(url=live.base_url + "/dicomweb", headers=live.headers())
    assert "FailedSOPSequence" not in dw.store_instances(items)
    assoc = _associate(live, live.peer_ae)
    assert assoc.is_established
    yield assoc
    if assoc.is_established:
        assoc.release()


def _studies(live: LiveNode) -> list[dict[str, Any]]:
    studies = httpx.get(live.base_url + "/dicomweb/studies", headers=live.headers()).json()
    return sorted(studies, key=lambda s: s["00201208"]["Value"][0], reverse=True)


def test_study_level_matching_and_return_keys(live: LiveNode, peer: Association) -> None:
    a, b = _studies(live)
    a_uid, b_uid = a["0020000D"]["Value"][0], b["0020000D"]["Value"][0]
    b_pid, b_date = b["00100020"]["Value"][0], b["00080020"]["Value"][0]
    a_date = a["00080020"]["Value"][0]

    status, found = c_find(
        peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID="", StudyDate=""
    )
    assert status == 0x0000 and len(found) == 2
    for ident in found:  # exactly the requested keys come back, plus the level
        assert {e.keyword for e in ident} == {
            "QueryRetrieveLevel", "StudyInstanceUID", "PatientID", "StudyDate",
        }  # fmt: skip
        assert ident.PatientID.startswith("HOSPA-")
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID=b_pid)
    assert [f.StudyInstanceUID for f in found] == [b_uid]
    # wildcards: '*' and '?' (case-sensitive outside PN), PN case-insensitively
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID="HOSPA-*")
    assert len(found) == 2
    _, found = c_find(
        peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID="?" + b_pid[1:]
    )
    assert [f.StudyInstanceUID for f in found] == [b_uid]
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID="hospa-*")
    assert found == []
    name = b["00100010"]["Value"][0]["Alphabetic"]
    _, found = c_find(
        peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="?" + name.lower()[1:]
    )
    assert [f.StudyInstanceUID for f in found] == [b_uid]
    # date ranges: closed, open on either side (dates are shifted per patient: sort them first)
    (lo, u_lo), (hi, u_hi) = sorted([(a_date, a_uid), (b_date, b_uid)])
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", StudyDate=f"-{lo}")
    assert u_lo in [f.StudyInstanceUID for f in found]
    assert len(found) == (1 if lo < hi else 2)
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", StudyDate=f"{hi}-")
    assert u_hi in [f.StudyInstanceUID for f in found]
    assert len(found) == (1 if lo < hi else 2)
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", StudyDate=f"{lo}-{hi}")
    assert len(found) == 2
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", StudyDate="-19000101")
    assert found == []
    # list of UID matching: a multi-valued StudyInstanceUID
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID=[a_uid, b_uid, "1.2.3"])
    assert sorted(f.StudyInstanceUID for f in found) == sorted([a_uid, b_uid])
    # a non-ASCII value comes back in UTF-8, and the reply says so
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", PatientID=b_pid, StudyDescription="")
    assert found[0].SpecificCharacterSet == "ISO_IR 192"
    assert found[0].StudyDescription == b["00081030"]["Value"][0] == "THORAX ÜBERSICHT"
    # ModalitiesInStudy and the study's counts as return keys
    _, found = c_find(
        peer,
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID=a_uid,
        ModalitiesInStudy="CT",
        NumberOfStudyRelatedInstances="",
    )
    assert len(found) == 1 and found[0].NumberOfStudyRelatedInstances == 3


def test_series_and_image_levels(live: LiveNode, peer: Association) -> None:
    a, _ = _studies(live)
    a_uid = a["0020000D"]["Value"][0]
    status, series = c_find(
        peer,
        QueryRetrieveLevel="SERIES",
        StudyInstanceUID=a_uid,
        SeriesInstanceUID="",
        Modality="",
        SeriesNumber="",
        NumberOfSeriesRelatedInstances="",
    )
    assert status == 0 and len(series) == 1
    se = series[0]
    assert se.Modality == "CT" and se.SeriesNumber == 2 and se.NumberOfSeriesRelatedInstances == 3
    _, none = c_find(peer, QueryRetrieveLevel="SERIES", StudyInstanceUID=a_uid, Modality="MR")
    assert none == []
    # Request Attributes Sequence > Requested Procedure ID: removed by de-identification
    asked, empty = Dataset(), Dataset()
    asked.RequestedProcedureID = "RP0042"
    empty.RequestedProcedureID = ""
    _, none = c_find(peer, QueryRetrieveLevel="SERIES", RequestAttributesSequence=[asked])
    assert none == []
    _, every = c_find(peer, QueryRetrieveLevel="SERIES", RequestAttributesSequence=[empty])
    assert len(every) == 2

    status, images = c_find(
        peer,
        QueryRetrieveLevel="IMAGE",
        StudyInstanceUID=a_uid,
        SeriesInstanceUID=se.SeriesInstanceUID,
        SOPInstanceUID="",
        SOPClassUID="",
        InstanceNumber="",
        Rows="",
    )
    assert status == 0 and sorted(int(i.InstanceNumber) for i in images) == [1, 2, 3]
    assert all(i.SOPClassUID == CTImageStorage and i.Rows == 32 for i in images)
    _, one = c_find(
        peer,
        QueryRetrieveLevel="IMAGE",
        SeriesInstanceUID=se.SeriesInstanceUID,
        SOPInstanceUID="",
        InstanceNumber="2",
    )
    assert len(one) == 1 and one[0].InstanceNumber == 2
    # an attribute outside the index comes back from the stored header
    _, spaced = c_find(peer, QueryRetrieveLevel="IMAGE", InstanceNumber="1", PixelSpacing="")
    assert [float(v) for v in spaced[0].PixelSpacing] == [1.0, 1.0]


def test_bad_identifiers_get_a_failure_status(live: LiveNode, peer: Association) -> None:
    for keys in (
        {"PatientID": ""},  # no QueryRetrieveLevel
        {"QueryRetrieveLevel": "PATIENT", "PatientID": ""},  # not in the Study Root model
        {"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-13"},
        {"QueryRetrieveLevel": "STUDY", "SOPInstanceUID": "1.2.3"},  # below the query level
    ):
        status, found = c_find(peer, **keys)
        assert status == 0xA900 and found == [], keys
    # the association survives and answers the next query
    status, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="")
    assert status == 0 and len(found) == 2


def _index_rows(live: LiveNode, count: int) -> None:
    """Index rows straight into the live node's database: enough matches that the SCP is still
    sending when the C-CANCEL arrives (index-only return keys never read the files)."""
    with live.direct_session() as (s, patient):
        study = Study(facility_id=patient.facility_id, patient_pk=patient.id, study_uid="2.25.4242")
        s.add(study)
        s.flush()
        series = Series(study_pk=study.id, series_uid="2.25.4243", modality="CT")
        s.add(series)
        s.flush()
        s.add_all(
            Instance(
                series_pk=series.id,
                sop_instance_uid=f"2.25.4244{i}",
                sop_class_uid=CTImageStorage,
                instance_number=i,
                storage_path="none",
                sha256="0" * 64,
                size=0,
            )
            for i in range(count)
        )


def test_cancel_stops_the_responses(live: LiveNode, peer: Association) -> None:
    _index_rows(live, 4000)
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.SeriesInstanceUID = "2.25.4243"
    q.SOPInstanceUID = ""
    q.InstanceNumber = ""
    statuses = []
    for status, _ in peer.send_c_find(q, FIND, msg_id=41):
        statuses.append(int(status.Status))
        if len(statuses) == 1:
            context_id = peer._get_valid_context(FIND, "", "scu").context_id
            peer.send_c_cancel(41, context_id)
    assert statuses[-1] == 0xFE00, hex(statuses[-1])
    assert all(s == 0xFF00 for s in statuses[:-1])
    assert len(statuses) - 1 < 4000
    # the association goes on: the next query is answered in full
    status, found = c_find(peer, QueryRetrieveLevel="SERIES", SeriesInstanceUID="2.25.4243")
    assert status == 0 and len(found) == 1


def test_a_peer_sees_only_its_own_facility(live: LiveNode, peer: Association) -> None:
    settings = get_settings(live.data_dir, database_url=live.database_url)
    node = open_node(settings=settings)
    try:
        with node.db.session() as s:
            fb = s.scalar(select(Facility).where(Facility.code == "HOSPB"))
            assert fb is not None
            service.add_ae_title(s, fb, "PEERB")
    finally:
        node.close()
    deadline = time.time() + 10  # the SCP re-reads its peer list every few seconds
    while True:
        other = _associate(live, "PEERB")
        if other.is_established or time.time() > deadline:
            break
        time.sleep(0.5)
    assert other.is_established
    try:
        for level in ("STUDY", "SERIES", "IMAGE"):
            status, found = c_find(other, QueryRetrieveLevel=level, StudyInstanceUID="")
            assert status == 0 and found == [], level
        theirs = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
        assert int(other.send_c_store(theirs).Status) == 0
        _, found = c_find(other, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID="")
        assert len(found) == 1 and found[0].PatientID.startswith("HOSPB-")
        hosp_b_uid = found[0].StudyInstanceUID
    finally:
        other.release()
    _, mine = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID="")
    assert len(mine) == 2 and all(m.PatientID.startswith("HOSPA-") for m in mine)
    # even asked by its UID, the other facility's study stays invisible
    _, found = c_find(peer, QueryRetrieveLevel="STUDY", StudyInstanceUID=hosp_b_uid)
    assert found == []
    assert pydicom.uid.UID(hosp_b_uid).is_valid
