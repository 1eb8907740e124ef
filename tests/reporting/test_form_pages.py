"""Report form and CDE catalog pages without a browser: every module's form renders, CSRF on
the page forms and the JSON calls, roles and facility scope."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.accounts.models import Facility
from pair.cde.catalog import catalog
from pair.core.node import Node
from pair.reporting.loader import modules
from pair.repository.models import Study
from pair.web.app import create_app
from tests.portal_data import PASSWORD, build_world
from tests.web.test_pages import HTML, sign_in


def test_every_module_form_renders_and_roles(sqlite_node: Node) -> None:
    with sqlite_node.db.session() as s:
        world = build_world(s)
        accounts.create_user(
            s, s.get(Facility, world.facilities["B"]), "radiologist-b", "radiologist", PASSWORD
        )
        study = s.scalar(select(Study).where(Study.patient_pk == world.cases["HOSPA-00001"]))
        assert study is not None
        uid = study.study_uid
    c = TestClient(create_app(sqlite_node))
    t = sign_in(c, "radiologist-a")
    case = c.get(f"/cases/{world.cases['HOSPA-00001']}", headers=HTML).text
    assert f'action="/studies/{uid}/reports"' in case and "rsna-ct-covid" in case
    # the page form needs the CSRF token
    r = c.post(f"/studies/{uid}/reports", data={"module": "corads"}, headers=HTML)
    assert r.status_code == 403
    report_ids = {}
    for module in modules().values():
        r = c.post(
            f"/studies/{uid}/reports",
            data={"module": module.id, "csrf_token": t},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        page = c.get(r.headers["location"], headers=HTML)
        assert page.status_code == 200, page.text
        assert module.label in page.text and 'id="sign-button"' in page.text
        assert ("Local wording, not verified" in page.text) == (module.wording == "local")
        report_ids[module.id] = int(r.headers["location"].rsplit("/", 1)[1])
        for el in module.elements:
            if el.is_input:
                assert f'data-element="{el.id}"' in page.text
    # opening the same module again goes to the existing report
    r = c.post(
        f"/studies/{uid}/reports",
        data={"module": "corads", "csrf_token": t},
        follow_redirects=False,
    )
    assert r.headers["location"] == f"/reports/{report_ids['corads']}"
    rsna = c.get(f"/reports/{report_ids['rsna-ct-covid']}", headers=HTML).text
    assert "inferred code" in rsna  # RDES296 ids are inferred and shown as such
    assert re.search(r'data-element="ggo_side"[^>]*hidden', rsna)  # not relevant yet
    # JSON calls with the session cookie need the CSRF header
    evaluate = "/api/reports/modules/rsna-ct-covid/evaluate"
    assert c.post(evaluate, json={"inputs": {}}).status_code == 403
    assert c.post(evaluate, json={"inputs": {}}, headers={"x-csrf-token": t}).status_code == 200
    # amending needs a signed version and a reason
    rid = report_ids["corads"]
    r = c.post(f"/reports/{rid}/amend", data={"reason": "x", "csrf_token": t}, headers=HTML)
    assert r.status_code == 409
    # AI suggestions are shown with their provenance next to the field
    sid = c.get("/api/reports", params={"study_uid": uid}).json()
    ct_sev = next(r["id"] for r in sid if r["module"] == "ct-severity-25")
    r = c.put(
        f"/api/reports/{ct_sev}/inputs",
        json={
            "inputs": {},
            "suggestions": [
                {"element": "rul", "value": 3, "algorithm": "pair-severity", "version": "0.2"}
            ],
        },
        headers={"x-csrf-token": t},
    )
    assert r.status_code == 200, r.text
    page = c.get(f"/reports/{ct_sev}", headers=HTML).text
    assert re.search(r"AI suggestion: <strong>3</strong>.*pair-severity 0.2", page)
    # data managers read the form but cannot edit or sign; other facilities see nothing
    dm = TestClient(create_app(sqlite_node))
    dm_token = sign_in(dm, "datamanager-a")
    page = dm.get(f"/reports/{rid}", headers=HTML).text
    assert 'id="readonly-note"' in page and 'id="sign-button"' not in page and "disabled" in page
    assert (
        dm.post(f"/api/reports/{rid}/sign", headers={"x-csrf-token": dm_token}).status_code == 403
    )
    other = TestClient(create_app(sqlite_node))
    sign_in(other, "radiologist-b")
    assert other.get(f"/reports/{rid}", headers=HTML).status_code == 404
    assert other.get(f"/api/reports/{rid}").status_code == 404
    # the page holds the report revision; a save or an amendment from a stale page gets 409
    csrf = {"x-csrf-token": t}
    rev = c.get(f"/api/reports/{rid}").json()["revision"]
    assert f'data-revision="{rev}"' in c.get(f"/reports/{rid}", headers=HTML).text
    body = {"inputs": {"corads": "3"}, "expected_revision": rev}
    assert c.put(f"/api/reports/{rid}/inputs", json=body, headers=csrf).status_code == 200
    stale = c.put(f"/api/reports/{rid}/inputs", json=body, headers=csrf)
    assert stale.status_code == 409 and "reload the report" in stale.json()["message"]
    signed = c.post(f"/api/reports/{rid}/sign", json={"expected_revision": rev + 1}, headers=csrf)
    assert signed.status_code == 200, signed.text
    page = c.get(f"/reports/{rid}", headers=HTML).text
    assert f'name="expected_revision" value="{rev + 2}"' in page
    amend = {"reason": "late finding", "csrf_token": t}
    r = c.post(f"/reports/{rid}/amend", data={**amend, "expected_revision": str(rev)}, headers=HTML)
    assert r.status_code == 409 and "changed by someone else" in r.text
    r = c.post(
        f"/reports/{rid}/amend",
        data={**amend, "expected_revision": str(rev + 2)},
        follow_redirects=False,
    )
    assert r.status_code == 303


def test_cde_catalog_page(sqlite_node: Node) -> None:
    with sqlite_node.db.session() as s:
        build_world(s)
    c = TestClient(create_app(sqlite_node))
    sign_in(c, "datamanager-a")
    page = c.get("/cdes", headers=HTML).text
    assert 'href="/cdes"' in page  # in the navigation
    for s in catalog().sets.values():
        assert f"/cdes?set={s.id}" in page
    page = c.get("/cdes?set=RDES296", headers=HTML).text
    assert "RDE1360.1" in page and "verif-inferred" in page and "RADLEX" in page
    assert c.get("/cdes?set=NOPE", headers=HTML).status_code == 404
