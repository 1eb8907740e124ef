"""The performance pages in a real browser (Playwright + Chromium): a registry analyst opens the
algorithms list and an algorithm's page with the forest plot (pooled diamond, I²), each site's
drift chart with the threshold line, and the alerts; a facility's evaluator sees its own site."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from pair.core.node import Node
from pair.web.app import create_app
from tests.registry.performance.perf_data import PASSWORD, build_hub, logit_ci, payload, sign
from tests.web.test_browser import browser, serve_app, shot

pytestmark = [pytest.mark.integration, pytest.mark.browser]


__all__ = ["browser"]  # the portal tests' module-scoped Debian Chromium fixture


def _sign_in(page: Page, base: str, user: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".userbox")).to_contain_text(user)


def test_algorithm_page_in_browser(browser: Browser, node: Node) -> None:
    hub = build_hub(node)
    months = ["2025-11", "2026-02", "2026-05"]
    series = {"HOSPA": [0.82, 0.72, 0.70], "HOSPB": [0.88, 0.89, 0.87], "HOSPC": [0.84, 0.85, 0.83]}
    with TestClient(create_app(node)) as client:
        for code, values in series.items():
            for month, value in zip(months, values, strict=True):
                p = payload(logit_ci(value, 0.15), month, use_case_id="pair-covid19-cxr-pattern")
                r = client.post(
                    "/api/registry/feedback",
                    content=json.dumps(sign(p, hub.secrets[code])),
                    headers={**hub.auth(f"node-{code}"), "Content-Type": "application/json"},
                )
                assert r.status_code == 201, r.text
    with serve_app(node) as base:
        page = browser.new_context().new_page()
        page.set_default_timeout(20000)
        _sign_in(page, base, "ana")
        page.get_by_role("navigation", name="Main").get_by_role(
            "link", name="AI performance", exact=True
        ).click()
        expect(page.locator("#perf-algorithms")).to_contain_text("CXR demo")
        expect(page.locator("#perf-alerts")).to_contain_text("below the minimum")
        page.get_by_role("link", name="CXR demo").click()
        forest = page.locator("#forest-plot")
        expect(forest).to_be_visible()
        assert page.evaluate("document.getElementById('forest-plot').naturalWidth") > 300
        expect(page.locator("#forest figcaption")).to_contain_text("Random-effects pooled estimate")
        expect(page.locator("#i2")).to_contain_text("I²")
        expect(page.locator("#perf-sites tbody tr")).to_have_count(3)
        charts = page.locator(".drift-chart img")
        expect(charts).to_have_count(3)
        assert page.evaluate("document.querySelector('.drift-chart img').naturalHeight") > 200
        expect(page.locator(".drift-chart figcaption").first).to_contain_text(
            "Dashed line: minimum 0.8"
        )
        expect(page.locator("#alerts")).to_contain_text("Hospital A")
        expect(page.locator("#alerts")).to_contain_text("lower CUSUM")
        shot(page, "performance-registry", node.db.is_sqlite)
        page.get_by_role("button", name="Sign out").click()
        # the facility's evaluator: its own row, the pooled estimate, no other site by name
        _sign_in(page, base, "eva")
        page.goto(base + "/registry/performance/cxr-demo")
        expect(page.locator("#perf-sites tbody tr")).to_have_count(1)
        expect(page.locator("#pooled")).to_contain_text("from 3 sites")
        expect(page.locator("main")).not_to_contain_text("Hospital B")
        expect(page.locator("main")).not_to_contain_text("Hospital C")
        expect(page.locator(".drift-chart img")).to_have_count(1)
