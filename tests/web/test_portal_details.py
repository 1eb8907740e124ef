"""Portal defects from the walk-through (issue 15, "Portal defects"): favicon, the quarantine
list with every status, the burned-in review page, a readable and exportable audit log that
fits a 1366 px window, sortable headers that look sortable and pseudonyms that do not wrap."""

from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient
from playwright.sync_api import Browser
from sqlalchemy import select, update

from pair.accounts import service as accounts
from pair.accounts.models import Facility, User
from pair.audit.service import Actor, record
from pair.core.node import Node
from pair.deid.service import set_facility_profile
from pair.repository.ingest import Outcome, Payload, ingest_batch
from pair.repository.models import Instance, Series, Study
from pair.web.app import create_app
from tests.factories import ct_instance, leaky_instance, quarantined_instance, to_bytes
from tests.portal_data import PASSWORD, build_world
from tests.web import test_browser as portal
from tests.web.test_pages import HTML, sign_in

browser = portal.browser
LONG = "x" * 2000


def _world(node: Node) -> dict[str, object]:
    with node.db.session() as s:
        world = build_world(s)
        a = s.get(Facility, world.facilities["A"])
        assert a is not None
        accounts.create_user(s, a, "operator-1", "node-operator", PASSWORD, allow_operator=True)
        admin = s.scalar(select(User).where(User.name == "admin-a"))
        assert admin is not None
        actor = accounts.actor_for(admin, "test")
        record(s, actor, "report.read", "report", "17", detail={"version": 2, "note": LONG})
        record(s, actor, "clinical.update", "case", "HOSPA-00001", detail={"fields": ["sex"]})
        study = s.scalar(select(Study).where(Study.facility_id == a.id))
        assert study is not None
        series = s.scalar(select(Series).where(Series.study_pk == study.id))
        assert series is not None
        s.execute(
            update(Instance)
            .where(Instance.series_pk == series.id)
            .values(burned_in_risk="secondary capture; modality OT may carry annotations")
        )
    return {"world": world, "facility": world.facilities["A"]}


def test_cleaned_description_is_explained_in_the_review(sqlite_node: Node) -> None:
    """A description cleaned at ingest ("CT jpegls" → "CT ***" because the original patient
    name held that word) is listed on the review page with the element and whose value it
    matched, never the value itself; a description that matches nothing is kept as written."""
    data = _world(sqlite_node)
    facility = int(data["facility"])  # type: ignore[call-overload]
    actor = Actor.system("test", facility_id=facility)
    with sqlite_node.db.session() as s:  # the Clean Descriptors option keeps descriptions
        set_facility_profile(s, s.get_one(Facility, facility), portal.KEEP_DESCRIPTIONS)
    named = ct_instance(
        study_uid="1.2.3.4.1",
        series_uid="1.2.3.4.1.1",
        description="CT jpegls",
        patient={"PatientName": "JPEGLS^ROSALIND"},
    )
    plain = ct_instance(study_uid="1.2.3.4.2", series_uid="1.2.3.4.2.1", description="CT jpegls")
    results = ingest_batch(
        sqlite_node,
        facility,
        [Payload(to_bytes(named), "a"), Payload(to_bytes(plain), "b")],
        "test",
        actor,
    )
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.STORED]
    with sqlite_node.db.session() as s:
        descriptions = dict(s.execute(select(Study.study_uid, Study.study_description)).all())
    assert descriptions[results[0].study_uid] == "CT ***"
    assert descriptions[results[1].study_uid] == "CT jpegls"
    c = TestClient(create_app(sqlite_node))
    sign_in(c, "admin-a")
    page = c.get("/admin/burned-in", headers=HTML).text
    assert "StudyDescription 1 word masked: name of PatientName" in page
    assert results[0].sop_instance_uid in page and results[1].sop_instance_uid not in page
    assert "ROSALIND" not in page.upper() and "JPEGLS" not in page.upper()


def test_favicon_quarantine_all_burned_in_audit_and_tables(sqlite_node: Node) -> None:
    data = _world(sqlite_node)
    quarantined_instance(sqlite_node, int(data["facility"]), leaky_instance())  # type: ignore[call-overload]
    c = TestClient(create_app(sqlite_node))
    icon = c.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    sign_in(c, "admin-a")

    every = c.get("/admin/quarantine?status=all", headers=HTML)
    assert every.status_code == 200 and "quarantine/" in every.text
    assert c.get("/admin/quarantine?status=nonsense", headers=HTML).status_code == 422

    burned = c.get("/admin/burned-in", headers=HTML)
    assert burned.status_code == 200 and 'id="burned-in-table"' in burned.text
    assert "secondary capture" in burned.text and "/thumbnail?viewport=96,96" in burned.text
    assert 'href="/admin/burned-in"' in burned.text  # an administration tab

    audit = c.get("/admin/audit", headers=HTML).text
    assert '<dl class="kv">' in audit and '{"' not in audit  # readable, not raw JSON
    assert 'href="/reports/17"' in audit and 'href="/cases?text=HOSPA-00001"' in audit
    assert LONG not in audit and "x" * 159 + "…" in audit  # long values cut on the page
    export = c.get("/admin/audit/export.csv?action=report.", headers=HTML)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert rows and {r["action"] for r in rows} == {"report.read"}
    assert LONG in rows[0]["detail"]  # the export keeps every value whole

    cases = c.get("/cases", headers=HTML).text
    assert 'class="sortable"' in cases and "sort-mark" in cases
    assert '<td class="nowrap"><a href="/cases/' in cases

    # the node operator reviews no patient images
    op = TestClient(create_app(sqlite_node))
    sign_in(op, "operator-1")
    assert op.get("/admin/burned-in", headers=HTML).status_code == 403
    assert 'href="/admin/burned-in"' not in op.get("/admin/audit", headers=HTML).text


def test_audit_page_fits_a_laptop_window(browser: Browser, sqlite_node: Node) -> None:
    _world(sqlite_node)
    with portal.serve_app(sqlite_node) as base:
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        portal.sign_in(page, base, "admin-a")
        page.goto(base + "/admin/audit")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 1366, width
        page.goto(base + "/cases")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1366
        ctx.close()
