"""A multiclass evaluation in a real browser: submit a 4-class package, evaluate it against the
RSNA chest radiograph report category (the category is the class), read the confusion matrix
and the per-class table, and download the report."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from pair.core.node import Node
from tests.evaluation.runs.evalrun_data import NodeData
from tests.evaluation.runs.multiclass_data import ALGO_ID, NAMES, category_package, write_reports
from tests.evaluation.runs.test_evalruns_browser import live
from tests.web.test_browser import browser, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.browser]
__all__ = ["browser", "live"]  # shared fixtures: module-scoped Chromium, live server + data


def test_multiclass_submit_run_report(
    browser: Browser, live: tuple[str, NodeData], node: Node, tmp_path: Path
) -> None:
    base, data = live
    categories = write_reports(node, data.facility_id, skip=0)
    folder = category_package(tmp_path / "pkg")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.writestr(f.name, f.read_bytes())
    package = tmp_path / "category.zip"
    package.write_bytes(buf.getvalue())

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    sign_in(page, base, "eva")
    page.goto(base + "/algorithms")
    page.get_by_label("Package (zip").set_input_files(str(package))
    page.get_by_role("button", name="Submit package").click()
    expect(page.locator(".alert")).to_contain_text(f"{ALGO_ID}@1.0.0 registered")

    page.goto(base + "/evaluations/new")
    page.get_by_label("Algorithm", exact=True).select_option(f"{ALGO_ID}@1.0.0")
    page.get_by_label("Truth source").select_option("report")
    page.get_by_label("Report module (truth)").select_option("rsna-cxr-covid")
    # positive categories filled in: a binary truth for a multiclass model is refused
    boxes = page.get_by_role("group", name="Positive categories of rsna-cxr-covid")
    boxes.get_by_label("Typical appearance", exact=True).check()
    page.get_by_role("button", name="Start evaluation").click()
    expect(page.locator(".alert-error")).to_contain_text("gives binary labels")
    # the form comes back with the choices made, the category still ticked
    expect(page.get_by_label("Truth source")).to_have_value("report")
    expect(boxes.get_by_label("Typical appearance", exact=True)).to_be_checked()
    boxes.get_by_label("Typical appearance", exact=True).uncheck()
    page.get_by_role("button", name="Start evaluation").click()

    expect(page).to_have_url(f"{base}/evaluations/1")
    expect(page.locator("#confusion")).to_be_visible(timeout=60_000)
    expect(page.locator("#main-table")).to_contain_text("Cohen's kappa")
    expect(page.locator("#multiclass-summary")).to_contain_text("Weighted kappa: linear")
    expect(page.locator("#per-class tbody tr")).to_have_count(len(NAMES))
    expect(page.locator("#cohort")).to_contain_text(f"{len(categories)} of 48 series")
    expect(page.locator("#figures img")).to_have_count(4)  # confusion, ROC, calibration, subgroups
    expect(page.locator("#calibration")).to_contain_text("one-vs-rest calibration slope")
    expect(page.locator("#checklist")).to_contain_text("Cohen's kappa")
    with page.expect_download() as dl:
        page.locator("#dl-html").click()
    html = Path(dl.value.path()).read_text()
    assert 'id="fig-confusion"' in html and "Weighted kappa (linear)" in html
    with page.expect_download() as dl:
        page.locator("#dl-feedback").click()
    envelope = json.loads(Path(dl.value.path()).read_text())
    assert envelope["payload"]["output_kind"] == "multiclass"
    page.close()
