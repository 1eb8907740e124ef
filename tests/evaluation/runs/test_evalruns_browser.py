"""Evaluator pages in a real browser (Playwright + Debian's Chromium) against a live server:
submit a bad package (each refusal reason shown) and the demo package, start an evaluation with
an uploaded label CSV on the 48 shared radiographs, follow its progress and read the result.
Screenshots docs/screenshots/evaluation-*.png come from the SQLite run."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from pair.core.node import Node
from tests.evaluation.runs.evalrun_data import DEMO_DIR, NodeData, ingest_shared_images, label_csv
from tests.portal_data import PASSWORD
from tests.web.test_browser import browser, nav, serve_app, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.browser]
__all__ = ["browser"]  # the portal's module-scoped Chromium fixture


def _zip(folder: Path, replace: tuple[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.iterdir()):
            data = f.read_bytes()
            if replace and f.name == "pair-algorithm.yaml":
                data = data.replace(replace[0].encode(), replace[1].encode())
            zf.writestr(f.name, data)
    return buf.getvalue()


@pytest.fixture
def live(node: Node, shared_data: Path, tmp_path: Path) -> Iterator[tuple[str, NodeData]]:
    data = ingest_shared_images(node, shared_data, tmp_path, password=PASSWORD)
    with serve_app(node) as base:
        yield base, data


def test_submit_run_report(
    browser: Browser,
    live: tuple[str, NodeData],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    base, data = live
    shots = "sqlite" in request.node.name
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    sign_in(page, base, "eva")
    nav(page, "Algorithms").click()
    expect(page.get_by_role("heading", name="Algorithms")).to_be_visible()

    sha = (DEMO_DIR / "pair-algorithm.yaml").read_text().split("sha256: ")[1].split()[0]
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_zip(DEMO_DIR, (sha, "ab" * 32)))
    page.get_by_label("Package (zip").set_input_files(str(bad))
    page.get_by_role("button", name="Submit package").click()
    problems = page.locator("#package-problems")
    expect(problems).to_contain_text("checksum mismatch")
    expect(page.locator("#algorithms-table")).to_contain_text("No algorithm registered yet")
    shot(page, "evaluation-algorithm-refused", shots)

    # a schema problem reads as a sentence and links to the format guide the node serves
    worded = tmp_path / "worded.zip"
    worded.write_bytes(_zip(DEMO_DIR, ("version: 1.0.0", "version: '1.0'")))
    page.get_by_label("Package (zip").set_input_files(str(worded))
    page.get_by_role("button", name="Submit package").click()
    expect(problems).to_contain_text("version: must be a semantic version")
    assert "^" not in problems.inner_text() and "pattern" not in problems.inner_text()
    problems.get_by_role("link", name="package format guide").click()
    expect(
        page.get_by_role("heading", name="Algorithm packages and sandboxed inference")
    ).to_be_visible()
    schema = page.get_by_role("link", name="docs/algorithm-package.schema.json")
    assert schema.get_attribute("href") == "/algorithms/format/schema.json"
    assert page.request.get(base + "/algorithms/format/schema.json").json()["title"]
    page.go_back()

    good = tmp_path / "demo.zip"
    good.write_bytes(_zip(DEMO_DIR))
    page.get_by_label("Package (zip").set_input_files(str(good))
    page.get_by_role("button", name="Submit package").click()
    expect(page.locator(".alert")).to_contain_text("demo-cxr-opacity@1.0.0 registered")
    expect(page.locator("#algorithms-table")).to_contain_text("demo-cxr-opacity")
    shot(page, "evaluation-algorithms", shots)

    page.get_by_role("link", name="Evaluate").click()
    expect(page.get_by_role("heading", name="New evaluation")).to_be_visible()
    # a bad cohort term is refused with the reason, nothing started
    page.get_by_label("More cohort terms").fill("modality=CR;age=40")
    page.get_by_role("button", name="Start evaluation").click()
    expect(page.locator(".alert-error")).to_contain_text("unknown key 'age'")
    page.get_by_label("More cohort terms").fill("")
    page.get_by_label("CR", exact=True).check()
    page.get_by_label("DX", exact=True).check()
    page.get_by_label("Truth source").select_option("csv")
    page.get_by_label("Label CSV").set_input_files(str(label_csv(data, tmp_path / "labels.csv")))
    page.get_by_label("Bootstrap resamples").fill("200")
    shot(page, "evaluation-new", shots)
    page.get_by_role("button", name="Start evaluation").click()

    expect(page).to_have_url(f"{base}/evaluations/1")
    # the page polls the run and reloads itself when it is done
    expect(page.locator("#main-table")).to_contain_text("AUC", timeout=60_000)
    expect(page.locator("#cohort")).to_contain_text("48 of 48 series")
    expect(page.locator("#main-table")).to_contain_text("youden")
    expect(page.locator("#auc-delong")).to_contain_text("DeLong")
    expect(page.locator("#figures img")).to_have_count(3)
    expect(page.locator("#checklist")).to_contain_text("to complete")
    shot(page, "evaluation-result", shots)
    if shots and os.environ.get("PAIR_SCREENSHOTS") == "1":
        page.screenshot(
            path=str(
                Path(__file__).resolve().parents[3] / "docs/screenshots/evaluation-result-full.png"
            ),
            full_page=True,
        )
    with page.expect_download() as dl:
        page.locator("#dl-html").click()
    html = Path(dl.value.path()).read_text()
    assert "data:image/png;base64" in html and "DEMO chest radiograph" in html
    with page.expect_download() as dl:
        page.locator("#dl-feedback").click()
    assert '"signature"' in Path(dl.value.path()).read_text()
    # per-case export and the false positives/negatives, each linked to the viewer
    with page.expect_download() as dl:
        page.locator("#dl-cases-csv").click()
    lines = Path(dl.value.path()).read_text().splitlines()
    assert lines[0].startswith("pseudonym,study_uid,case,score,truth,prediction,outcome")
    assert len(lines) == 49
    wrong = [ln for ln in lines[1:] if ",FP," in ln or ",FN," in ln]
    links = page.locator("#errors a", has_text="open in viewer")
    expect(links).to_have_count(len(wrong))
    if wrong:
        href = links.first.get_attribute("href") or ""
        assert href.startswith("/viewer/")
        links.first.click()
        expect(page).to_have_url(base + href)
        page.go_back()

    nav(page, "Evaluations").click()
    expect(page.locator("#runs-table")).to_contain_text("done")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, base, "rad")
    expect(nav(page, "Evaluations")).to_have_count(0)
    page.goto(base + "/evaluations/1")
    expect(page.locator("body")).to_contain_text("403")
    page.close()
