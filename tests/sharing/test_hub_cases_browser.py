"""Browse and pull selected hub cases, in a real browser against real processes on loopback:
a hub (`pair serve`, PAIR_ROLE=hub) holding one case of each of two facilities, and a site
(`pair serve`, PAIR_HUB_URL and its site-node credential, no automatic following). A data
manager of the site's feed facility opens /hub/cases, filters by origin, picks one case and
pulls it; the local copy keeps its origin and is never shared back. Another facility of the
site does not see the page's cases (404); a radiologist browses but cannot pull."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from pair.accounts import service
from pair.accounts.models import Facility
from pair.audit.models import AuditEvent
from pair.core.config import get_settings
from pair.core.node import open_node
from pair.sharing.feed.models import FeedOrigin
from tests.conftest import LiveNode
from tests.sharing.test_feed_live import _hub_uid, _origins, _push
from tests.web.test_browser import browser, shot

pytestmark = [pytest.mark.integration, pytest.mark.browser]


__all__ = ["browser"]  # the portal tests' module-scoped Debian Chromium fixture


@pytest.fixture
def hub_and_site(tmp_path: Path) -> Iterator[tuple[LiveNode, LiveNode]]:
    hub = LiveNode(tmp_path / "hub", f"sqlite:///{tmp_path / 'hub.db'}")
    hub.env_overrides = {"PAIR_ROLE": "hub", "PAIR_INGEST_WORKERS": "0"}
    hub.provision()
    node = open_node(settings=get_settings(hub.data_dir, database_url=hub.database_url))
    with node.db.session() as s:
        fac = service.create_facility(s, "Hospital C", "HOSPC")  # the site's member facility
        user = service.create_user(s, fac, "node_c", "site-node")
        hub.tokens["node_c"] = service.create_token(s, user)[1]
    node.close()
    site = LiveNode(tmp_path / "site", f"sqlite:///{tmp_path / 'site.db'}")
    site.env_overrides = {
        "PAIR_ROLE": "site",
        "PAIR_HUB_URL": hub.base_url,
        "PAIR_HUB_TOKEN": hub.tokens["node_c"],
        "PAIR_FEED_FACILITY": "HOSPA",
        "PAIR_INGEST_WORKERS": "0",
    }
    site.provision()
    for n in (hub, site):
        n.start_timeout_s = 180.0
    try:
        hub.start()
        site.start()
        yield hub, site
    finally:
        site.stop()
        hub.stop()


def test_data_manager_pulls_one_chosen_case(
    browser: Browser, hub_and_site: tuple[LiveNode, LiveNode]
) -> None:
    hub, site = hub_and_site
    case_a = _hub_uid(_push(hub, "dm_a", 2))  # origin HOSPA at the hub
    case_b = _hub_uid(_push(hub, "admin_b", 1))  # origin HOSPB

    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.set_default_timeout(30000)
    page.goto(site.base_url + "/login")
    page.get_by_label("User name").fill("dm_a")
    page.get_by_label("Password").fill("password-dm_a")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".userbox")).to_contain_text("dm_a")
    page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Hub cases", exact=True
    ).click()
    rows = page.locator("#hub-cases tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator(f'tr[data-study="{case_b}"] td.origin')).to_have_text("HOSPB")

    page.get_by_label("Origin facility").fill("HOSPA")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(rows).to_have_count(1)
    row = page.locator(f'tr[data-study="{case_a}"]')
    expect(row.locator("td.origin")).to_have_text("HOSPA")
    expect(row.locator("td.pulled")).to_have_text("—")
    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Pull selected", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Pulled 1 case(s) from the hub (2 instance")
    pulled = page.locator(f'tr[data-study="{case_a}"] td.pulled a')
    expect(pulled).to_have_text("pulled")
    expect(page.locator(f'tr[data-study="{case_a}"] input[type=checkbox]')).to_be_disabled()
    expect(page.locator(f'tr[data-study="{case_b}"] td.pulled')).to_have_text("—")
    page.get_by_label("Origin facility").fill("")  # unfiltered again: both cases
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(rows).to_have_count(2)
    shot(page, "hub-cases", True)
    pulled.click()  # the local copy opens as any case of the facility
    expect(page.get_by_role("heading", name="Studies", exact=True)).to_be_visible()

    # only the chosen case arrived, with its origin, marked never to be shared back
    assert _origins(site) == {case_a: ("HOSPA", False)}
    node = open_node(settings=get_settings(site.data_dir, database_url=site.database_url))
    try:
        with node.db.session() as s:
            origin = s.scalar(select(FeedOrigin))
            assert origin is not None and origin.instances == 2
            fa = s.scalar(select(Facility.id).where(Facility.code == "HOSPA"))
            assert origin.facility_id == fa
            who = s.scalars(
                select(AuditEvent.user_name).where(AuditEvent.action == "feed.pull")
            ).all()
            assert who == ["dm_a"]  # the user who chose the case
    finally:
        node.close()

    # another facility of the site: its users are not the ones the hub's cases go to
    r = httpx.get(site.base_url + "/hub/cases", headers=site.headers("admin_b"), timeout=30)
    assert r.status_code == 404
    # a radiologist of the feed facility browses but has no pull button (and the form is 403)
    r = httpx.get(
        site.base_url + "/hub/cases",
        headers={**site.headers("rad_a"), "accept": "text/html"},
        timeout=30,
    )
    assert r.status_code == 200 and case_a in r.text and "Pull selected" not in r.text
