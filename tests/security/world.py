"""Two facilities with real data for the authorization tests: every role in each, a node
operator, tokens, AE titles, ingested studies (with PHI in the mapping), a report, a custom
de-identification profile and quarantined instances. ``a_identifiers`` are strings that must
never reach a facility-B identity."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.accounts.models import AeTitle, User
from pair.core.node import Node
from pair.deid.models import PrivateStudyIdentity
from pair.repository import ingest
from pair.repository.models import Instance, Patient, QuarantineItem, Series, Study
from pair.repository.service import ingest_upload_files
from tests.factories import ct_instance, to_bytes

PASSWORD = "Ward7-Lumen-Quartz"
ROLES = ("admin", "data-manager", "radiologist", "evaluator", "researcher")
OPERATOR = "node-operator"
PHI = {
    "A": {"PatientName": "ALPHAPATIENT^ZELDA", "PatientID": "MRNALPHA4242"},
    "B": {"PatientName": "BETAPATIENT^YVES", "PatientID": "MRNBETA1313"},
}
ACCESSION = {"A": "ACCALPHA77", "B": "ACCBETA88"}
NAMES = {"A": ("Hospital Alpha", "HOSPA", "alpha"), "B": ("Hospital Beta", "HOSPB", "beta")}
_fresh = itertools.count(1)


def fresh(prefix: str) -> str:
    """A unique name for an object a test creates (and may destroy)."""
    return f"{prefix}{next(_fresh)}"


@dataclass
class Ids:
    facility: int = 0
    patient: int = 0
    pseudonym: str = ""
    study: str = ""
    series: str = ""
    instance: str = ""
    original_study: str = ""
    report: int = 0
    quarantine: int = 0
    ae_title: str = ""


@dataclass
class World:
    node: Node
    ids: dict[str, Ids] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # user name -> plain token
    users: dict[str, int] = field(default_factory=dict)  # user name -> id

    def a_identifiers(self) -> list[str]:
        a = self.ids["A"]
        found = [
            "Hospital Alpha",
            "ALPHAPATIENT",
            "ZELDA",
            "MRNALPHA4242",
            ACCESSION["A"],
            "alpha-profile-marker",
            "alpha-service",
            a.ae_title,
            a.pseudonym,
            a.study,
            a.original_study,
        ]
        found += [n for n in self.users if n.startswith("alpha-")]
        found += [f"label-{n}" for n in self.users if n.startswith("alpha-")]
        return found

    # ---- fresh objects of facility A, for routes that change or destroy one ----

    def fresh_ae(self) -> str:
        with self.node.db.session() as s:
            f = accounts.get_facility(s, self.ids["A"].facility)
            return accounts.add_ae_title(s, f, fresh("TMPAE")).ae_title

    def fresh_user(self) -> int:
        with self.node.db.session() as s:
            f = accounts.get_facility(s, self.ids["A"].facility)
            return accounts.create_user(s, f, fresh("tmp-user-"), "researcher").id

    def fresh_token(self) -> int:
        with self.node.db.session() as s:
            user = accounts.get_user(s, "alpha-service")
            return accounts.create_token(s, user, "temporary")[0].id

    def fresh_session(self) -> int:
        """A signed-in portal session of one of A's users (to be ended by an admin)."""
        from pair.accounts import websessions

        lifetimes = websessions.Lifetimes.from_settings(self.node.settings)
        with self.node.db.session() as s:
            return websessions.create(s, lifetimes, self.users["alpha-researcher"], {})[0]

    def fresh_quarantine(self, key: str = "A") -> int:
        ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), patient=PHI[key])
        _, rel = ingest.quarantine_store(self.node).write(to_bytes(ds))
        with self.node.db.session() as s:
            item = QuarantineItem(
                facility_id=self.ids[key].facility,
                storage_path=rel,
                sop_instance_uid=str(ds.SOPInstanceUID),
                modality="CT",
                reasons=[{"path": "(0010,0010)", "message": "patient name in a private tag"}],
            )
            s.add(item)
            s.flush()
            return item.id


def build(node: Node) -> World:
    """Populate ``node`` (an empty database) with the two facilities."""
    from pair.reporting import service as reporting

    world = World(node)
    with node.db.session() as s:
        facilities = {
            key: accounts.create_facility(s, name, code) for key, (name, code, _) in NAMES.items()
        }
        for key, f in facilities.items():
            prefix = NAMES[key][2]
            world.ids[key] = Ids(facility=f.id, ae_title=f"{prefix.upper()}_CT")
            accounts.add_ae_title(s, f, f"{prefix.upper()}_CT")
            f.deid_profile = f"# {prefix}-profile-marker\noptions: {{}}\n"
            for role in ROLES:
                _user(world, s, f, f"{prefix}-{role}", role)
        _user(world, s, facilities["B"], "node-op", OPERATOR)
        service = accounts.create_user(s, facilities["A"], "alpha-service", "researcher")
        world.users["alpha-service"] = service.id
    for key in ("A", "B"):
        _ingest(world, key)
    with node.db.session() as s:
        rad = accounts.actor_for(accounts.get_user(s, "alpha-radiologist"), "test")
        report = reporting.create_draft(s, rad, world.ids["A"].study, "corads")
        world.ids["A"].report = report.id
    world.ids["A"].quarantine = world.fresh_quarantine("A")
    world.ids["B"].quarantine = world.fresh_quarantine("B")
    return world


def _user(world: World, s: object, facility: object, name: str, role: str) -> None:
    user = accounts.create_user(
        s,  # type: ignore[arg-type]
        facility,  # type: ignore[arg-type]
        name,
        role,
        PASSWORD,
        allow_operator=role == OPERATOR,
    )
    world.users[name] = user.id
    world.tokens[name] = accounts.create_token(s, user, f"label-{name}")[1]  # type: ignore[arg-type]


def _ingest(world: World, key: str) -> None:
    ids = world.ids[key]
    ds = ct_instance(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient={**PHI[key], "AccessionNumber": ACCESSION[key]},
    )
    ids.original_study = str(ds.StudyInstanceUID)
    with world.node.db.session() as s:
        actor = accounts.actor_for(accounts.get_user(s, f"{NAMES[key][2]}-data-manager"), "test")
    upload = world.node.settings.data_dir / f"upload-{key}.dcm"
    upload.write_bytes(to_bytes(ds))
    results = ingest_upload_files(world.node, ids.facility, [("ct.dcm", upload)], actor)
    assert results[0][1].outcome == ingest.Outcome.STORED, results
    with world.node.db.session() as s:
        row = s.execute(
            select(Patient.id, Patient.pseudonym, Study.study_uid, Series.series_uid)
            .join(Study, Study.patient_pk == Patient.id)
            .join(Series, Series.study_pk == Study.id)
            .where(Patient.facility_id == ids.facility)
        ).one()
        ids.patient, ids.pseudonym, ids.study, ids.series = row
        ids.instance = s.scalars(
            select(Instance.sop_instance_uid)
            .join(Series, Instance.series_pk == Series.id)
            .where(Series.series_uid == ids.series)
        ).one()
        identity = s.scalar(
            select(PrivateStudyIdentity).where(PrivateStudyIdentity.study_uid == ids.study)
        )
        assert identity is not None and identity.original_study_uid == ids.original_study


def bearer(world: World, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[user]}"}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "page has no CSRF field"
    return found.group(1)


def portal_client(client: TestClient, user: str | None) -> str:
    """Sign ``client`` in as ``user`` (None: stay signed out); return the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    if user is None:
        return token
    r = client.post(
        "/login",
        data={"username": user, "password": PASSWORD, "csrf_token": token, "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/", headers={"accept": "text/html"}).text)


def ae_exists(node: Node, ae_title: str) -> bool:
    with node.db.session() as s:
        return s.scalar(select(AeTitle).where(AeTitle.ae_title == ae_title)) is not None


def user_active(node: Node, name: str) -> bool:
    with node.db.session() as s:
        user = s.scalar(select(User).where(User.name == name))
        return bool(user and user.active)
