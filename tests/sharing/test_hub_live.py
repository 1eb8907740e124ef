"""Site → hub with real processes on loopback: a hub (`pair serve --role hub`) and a site
(`pair serve --role site`, PAIR_HUB_URL through a proxy that can cut connections), each with its
own data dir and database.

One scenario, in order: the site pushes while the hub is down (items wait with an error; the
site is killed and restarted and goes on from its outbox table), the hub comes up and its first
answer is cut after it stored the batch (the site retries: no loss, no duplicates), the policy
filters what leaves, the quarantined instance never leaves, one facility's credential cannot
write another's cases, and a revoked credential is refused (401).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from pair.audit.service import Actor
from pair.clinical.dictionary import load_dictionary
from pair.clinical.models import ClinicalRecord
from pair.clinical.service import store_clinical
from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.repository.ingest import Outcome, Payload, ingest_batch
from pair.repository.models import Instance, Patient, QuarantineItem, Study
from pair.repository.retrieve import file_path
from pair.sharing import membership
from tests.conftest import LiveNode
from tests.factories import ct_instance, leaky_instance, to_bytes
from tests.sharing.cutproxy import CutProxy


def _wait(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _ingest_case(node: Node, facility_id: int, mrn: str, n: int) -> tuple[int, str]:
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
        pk = s.scalar(select(Study.patient_pk).where(Study.study_uid == results[0].study_uid))
        assert pk is not None
        return pk, results[0].study_uid


@pytest.fixture
def hub_and_tokens(tmp_path: Path) -> Iterator[tuple[LiveNode, dict[str, str]]]:
    hub = LiveNode(tmp_path / "hub", f"sqlite:///{tmp_path / 'hub.db'}")
    hub.env_overrides = {"PAIR_ROLE": "hub"}
    node = open_node(settings=get_settings(hub.data_dir, database_url=hub.database_url))
    tokens = {}
    with node.db.session() as s:
        for name, code in (("Site A", "SITEA"), ("Site B", "SITEB")):
            membership.register(s, name, code, contact="ops@example.org")
            tokens[code] = membership.approve(s, Actor.system(), code).token
    node.close()
    yield hub, tokens
    hub.stop()


def _hub_count(hub: LiveNode, model: Any, code: str) -> int:
    from pair.accounts.models import Facility

    node = open_node(settings=get_settings(hub.data_dir, database_url=hub.database_url))
    try:
        with node.db.session() as s:
            fid = s.scalar(select(Facility.id).where(Facility.code == code))
            return int(
                s.scalar(select(func.count()).select_from(model).where(model.facility_id == fid))
                or 0
            )
    finally:
        node.close()


def _hub_instances(hub: LiveNode) -> list[str]:
    node = open_node(settings=get_settings(hub.data_dir, database_url=hub.database_url))
    try:
        with node.db.session() as s:
            return list(s.scalars(select(Instance.sop_instance_uid)))
    finally:
        node.close()


def test_site_pushes_to_hub_through_outage_cut_and_revocation(
    tmp_path: Path, hub_and_tokens: tuple[LiveNode, dict[str, str]]
) -> None:
    hub, tokens = hub_and_tokens
    proxy = CutProxy(hub.port)
    site = LiveNode(tmp_path / "site", f"sqlite:///{tmp_path / 'site.db'}")
    site.provision()
    site.env_overrides = {
        "PAIR_HUB_URL": proxy.url,
        "PAIR_HUB_TOKEN": tokens["SITEA"],
        "PAIR_HUB_PUSH_INTERVAL_S": "0.3",
        "PAIR_HUB_BACKOFF_S": "0.2",
        "PAIR_HUB_BACKOFF_MAX_S": "1",
    }
    node = open_node(settings=get_settings(site.data_dir, database_url=site.database_url))
    from pair.accounts.models import Facility

    with node.db.session() as s:
        fa = s.scalar(select(Facility.id).where(Facility.code == "HOSPA"))
        assert fa is not None
    positive, positive_study = _ingest_case(node, fa, "MRN-POS", 3)
    _ingest_case(node, fa, "MRN-NEG", 2)
    leak = ingest_batch(
        node, fa, [Payload(to_bytes(leaky_instance()), "x")], "t", Actor.system("t", facility_id=fa)
    )
    assert leak[0].outcome is Outcome.QUARANTINED
    with node.db.session() as s:
        data, errors = load_dictionary().validate(
            {"test_method": "RT-PCR", "test_result_text": "Positive"}
        )
        assert not errors
        patient = s.get(Patient, positive)
        assert patient is not None
        store_clinical(s, Actor.system(), patient, data)
        quarantined = set(s.scalars(select(QuarantineItem.sop_instance_uid)))
        row = s.scalars(select(Instance)).first()
        assert row is not None
        a_instance = file_path(node, row).read_bytes()
    node.close()
    try:
        site.start()
        api = httpx.Client(base_url=site.base_url, headers=site.headers("admin_a"), timeout=10)
        status = lambda: api.get("/api/sharing").json()  # noqa: E731
        assert status()["policy"] == "none"
        assert api.put("/api/sharing/policy", json={"mode": "covid_positive"}).status_code == 200

        # the hub is down: the items wait, with the error and a growing attempt count
        _wait("a failed attempt", lambda: any(i["attempts"] > 0 for i in status()["items"]))
        st = status()
        assert st["counts"]["instance"] == {"queued": 3} and st["last_error"]
        # the site is killed and restarted: the outbox resumes from its table
        site.kill9()
        site.start()
        tries = max(i["attempts"] for i in st["items"])
        _wait("attempts resumed", lambda: max(i["attempts"] for i in status()["items"]) > tries)
        assert status()["counts"]["instance"] == {"queued": 3}

        # the hub comes up; its first answer is cut after it stored the batch
        proxy.cut_next = 1
        hub.start()
        _wait("everything sent", lambda: status()["counts"]["instance"].get("sent") == 3)
        _wait("clinical sent", lambda: status()["counts"]["clinical"].get("sent") == 1)
        assert proxy.cuts == 1
        stored_at_hub = _hub_instances(hub)
        assert len(stored_at_hub) == 3  # no loss, no duplicate after the retry
        assert _hub_count(hub, ClinicalRecord, "SITEA") == 1
        assert _hub_count(hub, Study, "SITEA") == 1
        a_token = {"Authorization": f"Bearer {tokens['SITEA']}"}
        qido = httpx.get(hub.base_url + "/dicomweb/studies", headers=a_token, timeout=10)
        assert [s["0020000D"]["Value"][0] for s in qido.json()] == [positive_study]

        # all cases: the negative case follows; the quarantined instance never leaves
        assert api.put("/api/sharing/policy", json={"mode": "all"}).status_code == 200
        _wait("all sent", lambda: status()["counts"]["instance"].get("sent") == 5)
        stored_at_hub = _hub_instances(hub)
        assert len(stored_at_hub) == 5
        assert not quarantined & set(stored_at_hub)
        assert all(i["object_key"] not in quarantined for i in status()["items"])
        assert _hub_count(hub, QuarantineItem, "SITEA") == 0

        # Site B's credential cannot write Site A's cases (404, as for a missing study)
        b_token = {"Authorization": f"Bearer {tokens['SITEB']}"}
        clinical = {"idempotency_key": "b-1", "study_uids": [positive_study], "data": {}}
        r = httpx.post(hub.base_url + "/api/hub/clinical", json=clinical, headers=b_token)
        assert r.status_code == 404
        report = {
            "idempotency_key": "b-2",
            "study_uid": positive_study,
            "module_id": "corads",
            "version": 1,
            "status": "final",
        }
        r = httpx.post(hub.base_url + "/api/hub/reports", json=report, headers=b_token)
        assert r.status_code == 404
        # ... nor store an instance into A's study: the same SOP Instance UID is a conflict
        body, ctype = _multipart(a_instance)
        r = httpx.post(
            hub.base_url + "/dicomweb/studies",
            content=body,
            headers={**b_token, "Content-Type": ctype},
        )
        assert r.status_code == 409, r.text
        assert len(_hub_instances(hub)) == 5
        assert _hub_count(hub, Study, "SITEB") == 0

        # revoked: refused with 401 at once; the site's items wait with the error
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pair",
                "hub",
                "revoke",
                "SITEA",
                "--data-dir",
                str(hub.data_dir),
            ],
            env=hub.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        r = httpx.post(
            hub.base_url + "/dicomweb/studies",
            content=body,
            headers={**a_token, "Content-Type": ctype},
        )
        assert r.status_code == 401
        assert httpx.get(hub.base_url + "/api/me", headers=a_token).status_code == 401
    finally:
        site.stop()
        proxy.close()


def _multipart(data: bytes) -> tuple[bytes, str]:
    b = "cutboundary"
    body = (
        f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{b}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={b}'
