"""QIDO-RS against PS3.18 §10.6 on a live `pair serve`, driven by dicomweb-client and httpx.

Required matching keys (Table 10.6.1-5) at each level, the matching kinds of PS3.4 C.2.2.2
(single value, list of UIDs, universal, wildcard, range), `includefield`, `fuzzymatching`,
the cross-level resources and the attributes returned by default (Tables 10.6.3-3/4/5).
Stored values are de-identified on the way in, so every query value is read back first.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pair.repository.models import Study
from tests.conftest import LiveNode
from tests.factories import ct_instance

pytestmark = pytest.mark.integration

STUDY_DEFAULT = [
    "00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00081190",
    "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010", "00201206",
    "00201208",
]  # fmt: skip
SERIES_DEFAULT = [
    "00080060", "0008103E", "00081190", "0020000E", "00200011", "00201209", "00400244",
    "00400245",
]  # fmt: skip
INSTANCE_DEFAULT = [
    "00080016", "00080018", "00080056", "00081190", "00200013", "00280010", "00280011",
    "00280100", "00280008",
]  # fmt: skip


def _value(item: dict[str, Any], tag: str) -> Any:
    return item[tag].get("Value", [None])[0]


def _get(live: LiveNode, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{live.base_url}/dicomweb{path}", params=params, headers=live.headers())


def _uids(live: LiveNode, path: str, tag: str = "0020000D", **params: str) -> list[str]:
    r = _get(live, path, **params)
    assert r.status_code in (200, 204), (params, r.status_code, r.text)
    return [] if r.status_code == 204 else [_value(i, tag) for i in r.json()]


@pytest.fixture
def stored(live: LiveNode) -> dict[str, Any]:
    """Two patients: A has a two-series CT study, B a one-instance study a year earlier."""
    sa, se1, se2 = generate_uid(), generate_uid(), generate_uid()
    a = [ct_instance(study_uid=sa, series_uid=se1, index=i) for i in (1, 2)]
    a2 = ct_instance(study_uid=sa, series_uid=se2, index=1)
    a2.SeriesNumber = 7
    request = Dataset()
    request.ScheduledProcedureStepID = "SPS0042"
    request.RequestedProcedureID = "RP0042"
    a2.RequestAttributesSequence = [request]
    b = ct_instance(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        study_date="20190310",
        patient={"PatientID": "MRN0000777", "PatientName": "ROE^RICHARD"},
    )
    b.StudyTime = "173000"
    dw = DICOMwebClient(url=live.base_url + "/dicomweb", headers=live.headers())
    assert "FailedSOPSequence" not in dw.store_instances([*a, a2, b])
    studies = _get(live, "/studies").json()
    assert len(studies) == 2
    by_count = {_value(s, "00201208"): s for s in studies}
    return {"A": by_count[3], "B": by_count[1], "dw": dw}


def test_study_level_required_keys_match(live: LiveNode, stored: dict[str, Any]) -> None:
    a, b = stored["A"], stored["B"]
    a_uid, b_uid = _value(a, "0020000D"), _value(b, "0020000D")
    for keyword, tag in [
        ("StudyDate", "00080020"),
        ("StudyTime", "00080030"),
        ("AccessionNumber", "00080050"),
        ("ReferringPhysicianName", "00080090"),
        ("PatientName", "00100010"),
        ("PatientID", "00100020"),
        ("StudyInstanceUID", "0020000D"),
        ("StudyID", "00200010"),
    ]:
        value = _value(a, tag)
        if isinstance(value, dict):
            value = value["Alphabetic"]
        # universal matching: an empty value matches everything
        assert sorted(_uids(live, "/studies", **{keyword: ""})) == sorted([a_uid, b_uid]), keyword
        if value:
            assert a_uid in _uids(live, "/studies", **{keyword: str(value)}), keyword
    assert _uids(live, "/studies", ModalitiesInStudy="CT") != []
    assert _uids(live, "/studies", ModalitiesInStudy="MR") == []
    assert sorted(_uids(live, "/studies", ModalitiesInStudy="MR,CT")) == sorted([a_uid, b_uid])
    assert len(_uids(live, "/studies", ModalitiesInStudy="MR\\CT")) == 2
    # the tag form is accepted as well as the keyword
    assert _uids(live, "/studies", **{"00100020": _value(b, "00100020")}) == [b_uid]


def test_uid_lists_wildcards_and_ranges(live: LiveNode, stored: dict[str, Any]) -> None:
    a, b = stored["A"], stored["B"]
    a_uid, b_uid = _value(a, "0020000D"), _value(b, "0020000D")
    # list of UID matching: comma-separated (PS3.18 §8.3.4.1) and backslash-separated
    both = sorted([a_uid, b_uid])
    assert sorted(_uids(live, "/studies", StudyInstanceUID=f"{a_uid},{b_uid}")) == both
    assert sorted(_uids(live, "/studies", StudyInstanceUID=f"{a_uid}\\{b_uid}")) == both
    assert _uids(live, "/studies", StudyInstanceUID=f"{b_uid},1.2.3") == [b_uid]

    pid = _value(b, "00100020")
    assert _uids(live, "/studies", PatientID="?" + pid[1:]) == [b_uid]
    assert _uids(live, "/studies", PatientID=pid[:3] + "*" + pid[-2:]) == [b_uid]
    assert _uids(live, "/studies", PatientID=pid[:-1]) == []  # no implicit prefix match
    assert sorted(_uids(live, "/studies", PatientID="*")) == both
    # wildcard matching is case-sensitive except for PN (PS3.4 C.2.2.2.4)
    assert _uids(live, "/studies", PatientID=pid.lower()[:3] + "*") == []
    name = _value(b, "00100010")["Alphabetic"]
    assert _uids(live, "/studies", PatientName="?" + name.lower()[1:]) == [b_uid]
    assert _uids(live, "/studies", PatientName=name.lower()) == [b_uid]

    # dates are shifted per patient: order the two studies by their stored dates
    (d_lo, u_lo), (d_hi, u_hi) = sorted(
        [(_value(a, "00080020"), a_uid), (_value(b, "00080020"), b_uid)]
    )
    assert _uids(live, "/studies", StudyDate=f"{d_lo}-{d_lo}") == ([u_lo] if d_lo < d_hi else both)
    assert u_lo in _uids(live, "/studies", StudyDate=f"-{d_lo}")
    assert u_hi in _uids(live, "/studies", StudyDate=f"{d_hi}-")
    if d_lo < d_hi:
        assert _uids(live, "/studies", StudyDate=f"-{d_lo}") == [u_lo]
        assert _uids(live, "/studies", StudyDate=f"{d_hi}-") == [u_hi]
    assert sorted(_uids(live, "/studies", StudyDate=f"{d_lo}-{d_hi}")) == both
    assert _uids(live, "/studies", StudyDate="-19000101") == []
    ta, tb = _value(a, "00080030"), _value(b, "00080030")
    assert ta < tb
    assert _uids(live, "/studies", StudyTime=f"{tb}-") == [b_uid]
    assert _uids(live, "/studies", StudyTime=f"-{ta}") == [a_uid]
    assert sorted(_uids(live, "/studies", StudyTime=f"{ta}-{tb}")) == both
    # a time range given with fewer components than stored still includes the whole hour
    assert _uids(live, "/studies", StudyTime=f"{tb[:2]}-{tb[:2]}") == [b_uid]
    for bad in ("2020-13", "20201301x", "2020010-20200101"):
        r = _get(live, "/studies", StudyDate=bad)
        assert r.status_code == 400 and "YYYYMMDD" in r.json()["message"], bad


def test_series_and_instance_level_required_keys(live: LiveNode, stored: dict[str, Any]) -> None:
    a_uid = _value(stored["A"], "0020000D")
    series = _get(live, f"/studies/{a_uid}/series").json()
    assert len(series) == 2
    s7 = next(s for s in series if _value(s, "00200011") == 7)
    s7_uid = _value(s7, "0020000E")
    for keyword, value in [
        ("Modality", "CT"),
        ("SeriesInstanceUID", s7_uid),
        ("SeriesNumber", "7"),
        ("PerformedProcedureStepStartDate", ""),
        ("PerformedProcedureStepStartTime", ""),
    ]:
        found = _uids(live, f"/studies/{a_uid}/series", "0020000E", **{keyword: value})
        assert s7_uid in found, keyword
    assert _uids(live, f"/studies/{a_uid}/series", "0020000E", SeriesNumber="7") == [s7_uid]
    # the Request Attributes Sequence keys: accepted; de-identification removed the IDs sent
    for key in ("RequestAttributesSequence.ScheduledProcedureStepID", "00400275.00401001"):
        for universal in ("", "*"):
            found = _uids(live, f"/studies/{a_uid}/series", "0020000E", **{key: universal})
            assert len(found) == 2, key
        for value in ("SPS0042", "RP0042", "RP*"):
            assert _uids(live, "/series", "0020000E", **{key: value}) == [], (key, value)
    r = _get(live, "/series", **{"RequestAttributesSequence.AccessionNumber": "A1"})
    assert r.status_code == 400 and "Sequence matching" in r.json()["message"]
    r = _get(live, f"/studies/{a_uid}/series", SeriesNumber="seven")
    assert r.status_code == 400 and "SeriesNumber" in r.json()["message"]

    instances = _get(live, f"/studies/{a_uid}/instances").json()
    assert len(instances) == 3
    one = instances[0]
    sop, cls = _value(one, "00080018"), _value(one, "00080016")
    path = f"/studies/{a_uid}/instances"
    assert _uids(live, path, "00080018", SOPInstanceUID=sop) == [sop]
    assert len(_uids(live, path, "00080018", SOPClassUID=cls)) == 3
    numbered = _uids(live, path, "00080018", InstanceNumber="2")
    assert len(numbered) == 1
    # series-level keys on the study's instances resource: a relational narrowing
    assert len(_uids(live, path, "00080018", SeriesInstanceUID=s7_uid)) == 1


def test_cross_level_resources(live: LiveNode, stored: dict[str, Any]) -> None:
    a_uid, b_uid = _value(stored["A"], "0020000D"), _value(stored["B"], "0020000D")
    all_series = _get(live, "/series").json()
    assert len(all_series) == 3
    assert {_value(s, "0020000D") for s in all_series} == {a_uid, b_uid}  # study attrs included
    assert len(_get(live, "/series", PatientID=_value(stored["B"], "00100020")).json()) == 1
    all_instances = _get(live, "/instances").json()
    assert len(all_instances) == 4
    for item in all_instances:  # study and series attributes come with each instance
        assert "0020000D" in item and "0020000E" in item and "00080060" in item
    in_a = _get(live, f"/studies/{a_uid}/instances").json()
    assert len(in_a) == 3  # series attributes come with each; the study is the one in the path
    assert {_value(i, "0020000E") for i in in_a} == set(
        _uids(live, f"/studies/{a_uid}/series", "0020000E")
    )
    assert all("00080060" in i and "00200011" in i for i in in_a)
    assert _get(live, "/studies/1.2.3.4/instances").status_code == 204
    dw: DICOMwebClient = stored["dw"]
    assert len(dw.search_for_instances(study_instance_uid=a_uid)) == 3
    assert len(dw.search_for_series(search_filters={"StudyInstanceUID": b_uid})) == 1


def test_default_attributes_and_json_model(live: LiveNode, stored: dict[str, Any]) -> None:
    a_uid = _value(stored["A"], "0020000D")
    study = _get(live, "/studies", StudyInstanceUID=a_uid).json()[0]
    assert set(STUDY_DEFAULT) <= set(study), set(STUDY_DEFAULT) - set(study)
    series = _get(live, f"/studies/{a_uid}/series").json()[0]
    assert set(SERIES_DEFAULT) <= set(series), set(SERIES_DEFAULT) - set(series)
    inst = _get(live, f"/studies/{a_uid}/instances").json()[0]
    assert set(INSTANCE_DEFAULT) <= set(inst), set(INSTANCE_DEFAULT) - set(inst)
    assert inst["00280100"] == {"vr": "US", "Value": [16]}
    assert inst["00280010"] == {"vr": "US", "Value": [32]}

    # PN as an object with an Alphabetic group; IS and US as JSON numbers; empty: no "Value"
    name = study["00100010"]
    assert name["vr"] == "PN" and isinstance(name["Value"][0]["Alphabetic"], str)
    assert study["00201208"] == {"vr": "IS", "Value": [3]}
    assert series["00200011"]["vr"] == "IS" and isinstance(series["00200011"]["Value"][0], int)
    assert study["00080061"] == {"vr": "CS", "Value": ["CT"]}
    assert study["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert series["00400244"] == {"vr": "DA"}  # absent from the instances: empty, VR only
    assert study["00081190"]["vr"] == "UR"
    assert study["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{a_uid}")


def test_includefield_limit_offset_fuzzy(live: LiveNode, stored: dict[str, Any]) -> None:
    a_uid = _value(stored["A"], "0020000D")
    path = f"/studies/{a_uid}/instances"
    by_keyword = _get(live, path, includefield="PixelSpacing").json()[0]
    assert by_keyword["00280030"] == {"vr": "DS", "Value": [1.0, 1.0]}
    by_tag = _get(live, path, includefield="00280030,ImagePositionPatient").json()[0]
    assert "00280030" in by_tag and "00200032" in by_tag
    # repeated includefield parameters add up
    r = httpx.get(
        f"{live.base_url}/dicomweb{path}?includefield=PixelSpacing&includefield=WindowCenter",
        headers=live.headers(),
    )
    assert {"00280030", "00281050"} <= set(r.json()[0])
    every = _get(live, path, includefield="all").json()[0]
    assert every["00080070"] == {"vr": "LO", "Value": ["ACME"]}
    assert "00281050" in every and "7FE00010" not in every
    study = _get(live, "/studies", StudyInstanceUID=a_uid, includefield="all").json()[0]
    assert "00200052" in study  # FrameOfReferenceUID, read from the stored header
    r = _get(live, "/studies", includefield="NoSuchAttribute")
    assert r.status_code == 400 and "NoSuchAttribute" in r.json()["message"]

    page = [_uids(live, "/instances", "00080018", limit="1", offset=str(i)) for i in range(5)]
    assert [len(p) for p in page] == [1, 1, 1, 1, 0]
    assert len({p[0] for p in page[:4]}) == 4
    for bad in ("-1", "x"):
        r = _get(live, "/instances", offset=bad)
        assert r.status_code == 400 and "offset" in r.json()["message"]

    # fuzzymatching is accepted; literal matching is done, and said so (PS3.18 §8.3.4.5)
    name = _value(stored["B"], "00100010")["Alphabetic"]
    r = _get(live, "/studies", PatientName=name, fuzzymatching="true")
    assert r.status_code == 200 and len(r.json()) == 1
    assert "fuzzymatching" in r.headers.get("warning", "")
    r = _get(live, "/studies", fuzzymatching="maybe")
    assert r.status_code == 400 and "fuzzymatching" in r.json()["message"]


def test_unknown_and_misplaced_keys_are_refused(live: LiveNode, stored: dict[str, Any]) -> None:
    r = _get(live, "/studies", PatientNam="X")
    assert r.status_code == 400 and "PatientNam" in r.json()["message"]
    r = _get(live, "/studies", SOPInstanceUID="1.2.3")
    assert r.status_code == 400 and "SOPInstanceUID" in r.json()["message"]
    r = _get(live, "/studies", limit="ten")
    assert r.status_code == 400 and "limit" in r.json()["message"]
    # a known attribute that is not a matching key: ignored with a warning, and returned
    r = _get(live, "/studies", PatientWeight="70")
    assert r.status_code == 200 and "PatientWeight" in r.headers["warning"]
    assert all("00101030" in s for s in r.json())


def test_server_limit_is_announced(live: LiveNode) -> None:
    """More matches than the server's default page: a Warning says more can be requested."""
    with live.direct_session() as (s, patient):
        s.add_all(
            Study(facility_id=patient.facility_id, patient_pk=patient.id, study_uid=f"2.25.77{i}")
            for i in range(1001)
        )
    r = _get(live, "/studies")
    assert r.status_code == 200 and len(r.json()) == 1000
    assert "Additional results can be requested" in r.headers["warning"]
    r = _get(live, "/studies", offset="1000")
    assert len(r.json()) == 1 and "warning" not in r.headers
    r = _get(live, "/studies", limit="5")  # the client's own page size: nothing to announce
    assert len(r.json()) == 5 and "warning" not in r.headers
    r = _get(live, "/studies", limit="1001")
    assert len(r.json()) == 1001 and "warning" not in r.headers
