"""Evaluation pages that must not mislead, in a real browser (Playwright + Chromium): the run
list colours a finished run green and a failed one red (issue 15), and the new-evaluation form
offers only choices that work together."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from pair.accounts import service as accounts
from pair.algorithms import DEMO_PACKAGE
from pair.algorithms import service as algorithms
from pair.audit.service import Actor
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
    # the progress heading says what is happening in words, not "running: running"
    table.locator("tr", has=page.locator(".badge", has_text="running")).get_by_role("link").click()
    heading = page.locator("#run-status")
    expect(heading).to_have_text("Running the algorithm on the selected cases")
    page.wait_for_timeout(1000)  # the page polls the run and keeps the words
    expect(heading).to_have_text("Running the algorithm on the selected cases")
    page.close()


@pytest.fixture
def evaluator_with_algorithm(node: Node) -> Iterator[str]:
    with node.db.session() as s:
        f = accounts.create_facility(s, "General Hospital")
        accounts.create_user(s, f, "eva", "evaluator", PASSWORD)
        algorithms.add_algorithm(s, node, DEMO_PACKAGE, Actor.system("test", f.id))
    with serve_app(node) as base:
        yield base


def test_new_evaluation_form_follows_truth_and_module(
    browser: Browser, evaluator_with_algorithm: str
) -> None:
    base = evaluator_with_algorithm
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    sign_in(page, base, "eva")
    page.goto(base + "/evaluations/new")
    truth = page.get_by_label("Truth source")
    module = page.get_by_label("Report module (truth)")
    # default: RT-PCR, nothing of the other truth sources shown or preset
    expect(truth).to_have_value("rt-pcr")
    expect(module).to_be_hidden()
    expect(page.get_by_label("Label CSV")).to_be_hidden()
    expect(page.locator("input[name=truth_values]:checked")).to_have_count(0)

    truth.select_option("report")
    expect(module).to_be_visible()
    module.select_option("corads")
    corads = page.get_by_role("group", name="Positive categories of corads")
    expect(corads).to_be_visible()
    expect(corads.get_by_label("CO-RADS 5")).to_be_visible()
    # the RSNA categories belong to another module: not offered for CO-RADS
    expect(page.get_by_label("Typical appearance", exact=True)).to_have_count(2)  # CT, CXR
    for box in page.get_by_label("Typical appearance", exact=True).all():
        expect(box).to_be_hidden()
    module.select_option("rsna-cxr-covid")
    expect(corads).to_be_hidden()
    rsna = page.get_by_role("group", name="Positive categories of rsna-cxr-covid")
    expect(rsna.get_by_label("Typical appearance", exact=True)).to_be_visible()

    # validated before a run starts, refused in a sentence: a category the module does not
    # have (a crafted post, as the page offers none)
    module.select_option("corads")
    page.evaluate(
        """() => { const i = document.createElement('input'); i.type = 'hidden';
        i.name = 'truth_values'; i.value = 'corads:typical';
        document.getElementById('evaluation-form').appendChild(i); }"""
    )
    page.get_by_role("button", name="Start evaluation").click()
    alert = page.locator(".alert-error").first
    expect(alert).to_contain_text("'typical' is not a category of report module 'corads'")
    expect(alert).to_contain_text("its categories are: 0 (CO-RADS 0), 1 (CO-RADS 1)")
    assert "{" not in alert.inner_text() and "}" not in alert.inner_text()
    # the form comes back as it was sent
    expect(truth).to_have_value("report")
    expect(module).to_have_value("corads")

    truth.select_option("csv")
    expect(module).to_be_hidden()
    expect(page.get_by_label("Label CSV")).to_be_visible()
    page.get_by_role("button", name="Start evaluation").click()
    expect(page.locator(".alert-error").first).to_contain_text("needs a label file")
    page.goto(base + "/evaluations")
    expect(page.locator("#runs-table")).to_contain_text("No evaluation yet")
    page.close()
