"""The portal in a real browser (Playwright + Debian's Chromium) against a live server, on
SQLite and PostgreSQL: sign-in, upload of a zip, search, case page with a bad clinical value,
viewer scrolling, admin pages, audit filters, quarantine review and role/facility limits.
Screenshots of the main pages go to docs/screenshots/ (from the SQLite run)."""

from __future__ import annotations

import os
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pydicom
import pytest
import uvicorn
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from pair.accounts.models import Facility
from pair.core.node import Node
from pair.deid.service import set_facility_profile
from pair.repository.models import QuarantineItem
from pair.synth.generator import generate
from pair.web.app import create_app
from tests.conftest import free_port
from tests.factories import leaky_instance, quarantined_instance
from tests.portal_data import PASSWORD, World, build_world

pytestmark = [pytest.mark.integration, pytest.mark.browser]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SLICES = 16
FILES = SLICES + 1  # the CT series and one radiograph
KEEP_DESCRIPTIONS = (
    "options: {retain_longitudinal_modified_dates: true, retain_patient_characteristics: true,"
    " clean_descriptors: true}\n"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield b
        b.close()


@contextmanager
def serve_app(node: Node) -> Iterator[str]:
    """The node's app on a free loopback port in a thread (real uvicorn); yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(node), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield base
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def server(node: Node) -> Iterator[tuple[str, World]]:
    with node.db.session() as s:
        world = build_world(s)
    with serve_app(node) as base:
        yield base, world


def sign_in(page: Page, base: str, user: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".userbox")).to_contain_text(user)


def nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to PAIR")).to_be_visible()


def shot(page: Page, name: str, enabled: bool) -> None:
    """Refresh docs/screenshots/NAME.png, only when asked (PAIR_SCREENSHOTS=1): a test run
    must not modify the checkout."""
    if enabled and os.environ.get("PAIR_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"))


def make_zip(tmp_path: Path) -> tuple[Path, str]:
    """A zip of one synthetic patient (`pair synth`: a DX and a 16-slice chest CT); returns the
    zip and the patient's original family name (which must not reach the viewer)."""
    out = tmp_path / "synth"
    generate(out, 1, 1, seed=2, workers=1, ct_slices=SLICES, ct_size=256, cxr_size=256)
    files = sorted(out.glob("site-01/**/*.dcm"))
    family = str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientName).split("^")[0]
    path = tmp_path / "synthetic-patient.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in files:
            zf.write(f, f.relative_to(out).as_posix())
    return path, family


def test_portal_in_browser(
    browser: Browser,
    server: tuple[str, World],
    node: Node,
    tmp_path: Path,
    database_url: str,
) -> None:
    base, world = server
    screenshots = database_url.startswith("sqlite")
    with node.db.session() as s:  # descriptions are an opt-in (Clean Descriptors): searched below
        facility = s.get(Facility, world.facilities["A"])
        assert facility is not None
        set_facility_profile(s, facility, KEEP_DESCRIPTIONS)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.set_default_timeout(20000)

    # sign-in: a wrong password is refused with a message; then the data manager signs in
    page.goto(base + "/cases")
    expect(page).to_have_url(re.compile(r"/login\?next=/cases"))
    shot(page, "login", screenshots)
    page.get_by_label("User name").fill("datamanager-a")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("wrong password")
    sign_in(page, base, "datamanager-a")
    expect(nav(page, "Admin")).to_have_count(0)

    # upload a zip of a CT series plus a file that is not DICOM
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    nav(page, "Upload").click()
    archive, family_name = make_zip(tmp_path)
    page.locator("#pick-files").set_input_files([str(archive), str(junk)])
    expect(page.locator("#upload-status")).to_contain_text("Finished: 2 files", timeout=60000)
    expect(page.locator("#n-stored")).to_have_text(str(FILES))
    expect(page.locator("#n-rejected")).to_have_text("1")
    expect(page.locator("#outcome-table")).to_contain_text("notes.txt")
    # the new studies are linked to their case pages
    expect(page.locator("#new-studies a")).to_have_count(2)
    page.locator("#new-studies a").first.click()
    expect(page.get_by_role("heading", name="Clinical data")).to_be_visible()
    page.go_back()
    shot(page, "upload", screenshots)

    # search: free text on descriptions, modality filter, sorting, result count
    nav(page, "Cases").click()
    expect(page.locator("#result-count")).to_have_text("4 cases found")
    page.get_by_label("Text").fill("hrct")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#result-count")).to_have_text("1 case found")
    page.get_by_role("link", name="Reset").click()
    page.get_by_label("Modality").select_option("CR")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#result-count")).to_have_text("1 case found")
    page.get_by_role("link", name="Reset").click()
    page.get_by_role("link", name="Case", exact=True).click()  # pseudonym, descending
    expect(page.locator("#cases-table tbody tr").first).to_contain_text("HOSPA-00003")
    shot(page, "cases", screenshots)
    page.get_by_label("Text").fill("hrct")
    page.get_by_role("button", name="Search").click()
    page.locator("#cases-table tbody a").first.click()

    # case page: thumbnails render; a bad clinical value is refused and nothing is saved
    expect(page.get_by_role("heading", name="Clinical data")).to_be_visible()
    case_url = page.url
    thumb = page.locator(".thumb img").first
    expect(thumb).to_be_visible()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle()
    )
    page.get_by_label("COVID-19 status").select_option("Yes")
    page.get_by_label("Hospital admission day").fill("5")
    page.get_by_label("Hospital discharge day").fill("2")
    page.get_by_role("button", name="Save clinical data").click()
    expect(page.locator("#e-days_to_hospital_discharge")).to_contain_text("cannot be before")
    expect(page.get_by_label("Hospital discharge day")).to_have_attribute("aria-invalid", "true")
    page.goto(case_url)
    expect(page.get_by_label("COVID-19 status")).to_have_value("")
    page.get_by_label("COVID-19 status").select_option("Yes")
    page.get_by_label("Sex").select_option("Male")
    page.get_by_label("Age at index").fill("67")
    page.get_by_label("Hospital admission day").fill("1")
    page.get_by_label("Hospital discharge day").fill("8")
    page.get_by_role("button", name="Save clinical data").click()
    expect(page.get_by_role("status")).to_contain_text("Clinical data saved")
    expect(page.get_by_label("Age at index")).to_have_value("67")
    shot(page, "case", screenshots)

    # viewer: scroll with keys, wheel and slider; presets; header panel
    page.locator(".thumb", has_text="CT").click()
    counter = page.locator("#counter")
    expect(counter).to_have_text(f"1 / {SLICES}")
    page.wait_for_function("() => document.getElementById('image').naturalWidth > 0")
    page.locator("#viewport").focus()
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    expect(counter).to_have_text(f"4 / {SLICES}")
    page.locator("#viewport").hover()
    page.mouse.wheel(0, 120)
    expect(counter).to_have_text(f"5 / {SLICES}")
    page.locator("#slice").fill(str(SLICES))
    expect(counter).to_have_text(f"{SLICES} / {SLICES}")
    page.keyboard.press("Home")
    page.get_by_role("button", name="Lung").click()
    expect(page.locator("#image")).to_have_attribute("src", re.compile(r"window=-600,1500"))
    page.wait_for_function("() => document.getElementById('image').naturalWidth > 0")
    expect(page.locator("#header-table")).to_contain_text("PatientName")
    expect(page.locator("#header-table")).not_to_contain_text(family_name)
    box = page.locator("#viewport").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 260, box["y"] + 230)
    page.mouse.up()
    expect(page.locator("#wl-readout")).not_to_have_text("W 1500 / L -600")
    page.locator("#slice").fill(str(SLICES // 2))
    expect(counter).to_have_text(f"{SLICES // 2} / {SLICES}")
    page.get_by_role("button", name="Lung").click()
    expect(page.locator("#wl-readout")).to_have_text("W 1500 / L -600")
    expect(page.locator("#loading")).to_be_hidden()
    shot(page, "viewer", screenshots)
    sign_out(page)

    # admin: users, tokens (shown once), AE titles, audit filters, quarantine review
    item_id = quarantined_instance(node, world.facilities["A"], leaky_instance())
    sign_in(page, base, "admin-a")
    nav(page, "Admin").click()
    page.get_by_label("Login name").fill("new-radiologist")
    page.get_by_label("Role").select_option("radiologist")
    page.get_by_label("Initial password").fill("a-long-password")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("status")).to_contain_text("User new-radiologist created")
    shot(page, "admin-users", screenshots)
    page.get_by_role("link", name="Tokens").click()
    page.get_by_label("Label").fill("pacs router")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token")).to_have_text(re.compile(r"^pair_"))
    page.get_by_role("link", name="AE titles").click()
    page.get_by_label("AE title").fill("CT_SCANNER_2")
    page.get_by_role("button", name="Add AE title").click()
    expect(page.locator("#ae-table")).to_contain_text("CT_SCANNER_2")
    page.get_by_role("link", name="Quarantine").click()
    expect(page.locator("#quarantine-table")).to_contain_text("name fragment")
    shot(page, "quarantine", screenshots)
    page.get_by_role("link", name="Review", exact=True).click()
    expect(page.locator("#findings")).to_contain_text("BodyPartExamined")
    shot(page, "quarantine-review", screenshots)
    page.get_by_label("Review note").fill("name in body part; resend from PACS")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Reject").click()
    expect(page.locator(".alert-success")).to_contain_text(f"Quarantine item {item_id} rejected")
    expect(page.get_by_text("Nothing pending")).to_be_visible()
    nav(page, "Audit log").click()
    page.get_by_label("Action").fill("clinical.")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#audit-table tbody tr")
    expect(rows.first).to_contain_text("clinical.")
    assert all(a.startswith("clinical.") for a in rows.locator("td:nth-child(3)").all_inner_texts())
    page.get_by_label("User").select_option("admin-a")
    page.get_by_label("Action").fill("")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#audit-table")).to_contain_text("quarantine.reject")
    assert set(rows.locator("td:nth-child(2)").all_inner_texts()) == {"admin-a"}
    shot(page, "audit", screenshots)
    sign_out(page)

    # a radiologist cannot reach admin pages; facility B cannot open facility A's case
    sign_in(page, base, "radiologist-a")
    expect(nav(page, "Admin")).to_have_count(0)
    page.goto(base + "/admin/users")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    shot(page, "forbidden", screenshots)
    sign_out(page)
    sign_in(page, base, "datamanager-b")
    page.goto(case_url)
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.goto(base + "/cases")
    expect(page.locator("#result-count")).to_have_text("1 case found")
    ctx.close()


def test_quarantine_review_page_in_browser(
    browser: Browser, server: tuple[str, World], node: Node
) -> None:
    """The review page names the element, masks its value, shows the image, offers no release,
    and "remove these elements and store" stores it (re-scanned clean)."""
    base, world = server
    item_id = quarantined_instance(node, world.facilities["A"], leaky_instance())
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    sign_in(page, base, "admin-a")
    page.goto(f"{base}/admin/quarantine/{item_id}")
    findings = page.locator("#findings")
    expect(findings).to_contain_text("BodyPartExamined")
    expect(findings).to_contain_text("(0018,0015)")
    expect(findings.locator(".masked")).to_have_text("J********")
    assert "JOHNATHAN" not in page.content()
    preview = page.locator("#q-preview")
    expect(preview).to_be_visible()
    page.wait_for_function("document.querySelector('#q-preview').naturalWidth > 0")
    expect(page.get_by_role("button", name=re.compile("Release"))).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Re-run de-identification"))).to_be_visible()
    page.get_by_label("Review note").fill("name in body part examined")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Remove these elements and store").click()
    expect(page.locator(".alert-success")).to_contain_text(
        f"Quarantine item {item_id} stored without the flagged elements"
    )
    with node.db.session() as s:
        item = s.get(QuarantineItem, item_id)
        assert item is not None and item.status == "stored"
        assert item.review_note == "name in body part examined"
    ctx.close()
