"""A use case in a real browser (Playwright + Chromium) on SQLite and PostgreSQL: an author
drafts one from the form (a wrong CDE value is named), submits it, a colleague comments, the
author revises (the diff shows the change), and only the panel member can publish it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from pair.accounts import service as accounts
from pair.algorithms import DEMO_PACKAGE
from pair.core.node import Node
from pair.usecases.spec import SHIPPED_DIR, load_file
from tests.algorithms.algo_builders import write_package, zip_folder
from tests.web.test_browser import browser, serve_app

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PASSWORD = "Ward7-Lumen-Quartz-Usecase"


__all__ = ["browser"]  # the portal tests' module-scoped Debian Chromium fixture


def _sign_in(page: Page, base: str, user: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".userbox")).to_contain_text(user)
    page.goto(base + "/usecases")


def _sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to PAIR")).to_be_visible()


def _violating_package(tmp_path: Path) -> Path:
    """The demo package declaring the browser's use case, but for CT (the use case is CR/DX)."""
    m = yaml.safe_load((DEMO_PACKAGE / "pair-algorithm.yaml").read_text())
    m.update(id="ct-opacity", use_case_id="pair-browser-case", modality=["CT"])
    folder = write_package(tmp_path / "pkg", m, (DEMO_PACKAGE / "model.onnx").read_bytes())
    out = tmp_path / "ct-opacity.zip"
    out.write_bytes(zip_folder(folder))
    return out


def test_draft_review_publish_in_browser(browser: Browser, node: Node, tmp_path: Path) -> None:
    with node.db.session() as s:
        f = accounts.create_facility(s, "General Hospital")
        for name, role in (("ann-author", "radiologist"), ("rex-reader", "researcher")):
            accounts.create_user(s, f, name, role, PASSWORD)
        accounts.create_user(s, f, "pam-panel", "panel", PASSWORD)
        accounts.create_user(s, f, "eve-evaluator", "evaluator", PASSWORD)
    doc = copy.deepcopy(load_file(SHIPPED_DIR / "covid19-cxr-pattern.yaml").document)
    overview = {**doc["overview"], "id": "pair-browser-case", "title": "Browser opacity case"}
    outputs = doc["technical_specifications"]
    with serve_app(node) as base:
        page = browser.new_context().new_page()
        page.set_default_timeout(20000)
        _sign_in(page, base, "ann-author")
        expect(page.locator("#usecase-table")).to_contain_text("pair-covid19-ct-quantification")
        page.locator("#new-usecase").click()
        # the form is built from the schema: one input per field, outputs as YAML
        expect(page.locator("#f-evaluation_plan-primary_metric")).to_have_value("auroc")
        page.locator("#f-overview-id").fill(overview["id"])
        bad = copy.deepcopy(outputs["primary_outputs"])
        bad[0]["value_set"] = ["RDE1360.0", "RDE1360.8"]
        page.locator("#f-technical_specifications-primary_outputs").fill(yaml.safe_dump(bad))
        page.locator("#save-usecase").click()
        # each problem is shown next to its field (a missing title, then a wrong CDE value)
        expect(page.locator("#e-f-overview-title-1")).to_contain_text(
            "'title' is a required property"
        )
        page.locator("#f-overview-title").fill(overview["title"])
        page.locator("#save-usecase").click()  # the schema holds: now the CDE values are checked
        expect(page.locator("#e-f-technical_specifications-primary_outputs-1")).to_contain_text(
            "primary_outputs/0/value_set/1: 'RDE1360.8' is not a value of RDE1360"
        )
        expect(page.locator("#problems")).to_contain_text("'RDE1360.8' is not a value")
        page.locator("#f-technical_specifications-primary_outputs").fill(
            yaml.safe_dump(outputs["primary_outputs"])
        )
        page.locator("#f-evaluation_plan-operating_point_rule-kind").select_option("youden")
        page.locator("#f-evaluation_plan-operating_point_rule-value").fill("")
        page.locator("#save-usecase").click()
        expect(page.locator("#usecase-status")).to_have_text("draft")
        page.locator("#submit-review").click()
        expect(page.locator("#usecase-status")).to_have_text("under_review")
        expect(page.locator("#publish")).to_have_count(0)  # authors do not publish
        _sign_out(page)

        _sign_in(page, base, "rex-reader")
        page.goto(base + "/usecases/pair-browser-case")
        expect(page.locator("#revise")).to_have_count(0)
        page.locator("#comment-text").fill("Please name the portable AP view explicitly.")
        page.locator("#add-comment").click()
        expect(page.locator("#comments")).to_contain_text("rex-reader on version 1")
        _sign_out(page)

        _sign_in(page, base, "ann-author")
        page.goto(base + "/usecases/pair-browser-case")
        page.locator("#revise").click()
        page.locator("#f-technical_specifications-inputs-views").fill("PA\nAP\nAP portable")
        page.locator("#save-usecase").click()
        expect(page.locator(".page-head")).to_contain_text("version 2")
        page.locator("#diff-link").click()
        expect(page.locator("#diff-table")).to_contain_text("technical_specifications/inputs/views")
        expect(page.locator("#diff-table")).to_contain_text("AP portable")
        _sign_out(page)

        _sign_in(page, base, "pam-panel")
        page.goto(base + "/usecases/pair-browser-case")
        page.locator("#publish").click()
        expect(page.locator("#usecase-status")).to_have_text("published")
        expect(page.locator("body")).to_contain_text("youden")
        page.goto(base + "/usecases?status=published&q=browser")
        expect(page.locator("#usecase-table")).to_contain_text("pair-browser-case")
        _sign_out(page)

        # the published use case binds: a package declaring it for CT is refused, with the reason
        _sign_in(page, base, "eve-evaluator")
        page.goto(base + "/algorithms")
        page.get_by_label("Package (zip").set_input_files(str(_violating_package(tmp_path)))
        page.get_by_role("button", name="Submit package").click()
        expect(page.locator(".alert")).to_contain_text(
            "does not fit use case pair-browser-case@2: modality: CT not accepted by use case "
            "pair-browser-case (modalities: CR, DX)"
        )
        expect(page.locator("#algorithms-table")).not_to_contain_text("ct-opacity")
