"""The registry in a real browser (Playwright + Debian's Chromium) against a live server: an
analyst opens /registry, sees the dashboard's plots, builds a cohort, reads the counts by site,
drills down and downloads a CSV; a radiologist gets the aggregates without rows or exports.
Screenshots docs/screenshots/registry-*.png with PAIR_SCREENSHOTS=1."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from pair.core.node import Node
from tests.registry.registry_data import PASSWORD, Hub, build_hub
from tests.web.test_browser import browser, nav, serve_app, shot

pytestmark = [pytest.mark.integration, pytest.mark.browser]
__all__ = ["browser"]  # the portal's module-scoped Chromium fixture


@pytest.fixture
def live(sqlite_node: Node) -> Iterator[tuple[str, Hub]]:
    hub = build_hub(
        sqlite_node,
        {"analyst": ("A", "registry-analyst"), "radiologist": ("B", "radiologist")},
    )
    with serve_app(sqlite_node) as base:
        yield base, hub


def _sign_in(page: Page, base: str, user: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".userbox")).to_contain_text(user)


def test_analyst_dashboard_cohort_and_csv(browser: Browser, live: tuple[str, Hub]) -> None:
    base, hub = live
    page = browser.new_page(accept_downloads=True)
    _sign_in(page, base, "analyst")
    nav(page, "Registry").click()
    expect(page.get_by_role("heading", name="National registry")).to_be_visible()
    expect(page.locator("#registry-total")).to_contain_text("8 studies from 3 sites")
    plots = page.locator("img.registry-plot")
    expect(plots).to_have_count(5)
    for i in range(5):  # every SVG decoded and laid out by the browser
        assert plots.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    expect(page.get_by_role("img", name="COVID-19 positivity by site")).to_be_visible()
    shot(page, "registry-dashboard", True)

    page.get_by_role("link", name="Build a cohort").click()
    page.get_by_label("COVID-19 status").select_option("Yes")
    page.get_by_role("button", name="Count").click()
    expect(page.locator("#cohort-total")).to_contain_text("4 studies of 4 patients")
    rows = page.locator("#counts-by-site tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("HOSPA")
    expect(rows.nth(0).locator("td").nth(1)).to_have_text("2")
    expect(page.locator("#drill-down tbody tr")).to_have_count(4)
    expect(page.locator("#drill-down")).to_contain_text(hub.pseudonyms["A1"])
    shot(page, "registry-cohort", True)
    with page.expect_download() as info:
        page.get_by_role("link", name="Export studies.csv").click()
    path = info.value.path()
    assert path is not None
    with open(path, encoding="utf-8") as fh:
        got = list(csv.DictReader(io.StringIO(fh.read())))
    assert sorted(r["pseudonym"] for r in got) == sorted(
        hub.pseudonyms[k] for k in ("A1", "A3", "B1", "C1")
    )
    assert {r["clinical_covid19_positive"] for r in got} == {"Yes"}

    page.get_by_label("More criteria").fill("cde.RDE0000=x")
    page.get_by_role("button", name="Count").click()
    expect(page.locator("#cohort-error")).to_contain_text("unknown CDE 'RDE0000'")
    page.close()


def test_radiologist_sees_aggregates_only(browser: Browser, live: tuple[str, Hub]) -> None:
    base, _ = live
    page = browser.new_page()
    _sign_in(page, base, "radiologist")
    nav(page, "Registry").click()
    expect(page.locator("img.registry-plot")).to_have_count(5)
    expect(page.get_by_role("link", name="Data quality")).to_have_count(0)
    page.get_by_role("link", name="Build a cohort").click()
    page.get_by_role("button", name="Count").click()
    expect(page.locator("#cohort-total")).to_contain_text("8 studies")
    expect(page.locator("#drill-down")).to_have_count(0)
    expect(page.locator("#exports")).to_have_count(0)
    response = page.goto(base + "/registry/quality")
    assert response is not None and response.status == 403
    page.close()
