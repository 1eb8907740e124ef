"""The report form in a real browser (Playwright + Debian's Chromium) against a live server on
SQLite and PostgreSQL: a typical CT case entered with mouse and keyboard shows the exact RSNA
sentence in the live preview, is signed and its SR shows up in QIDO-RS and on the case page;
an atypical case; an override that needs a reason; read-only and other-facility access.
Screenshots of the form and the CDE catalog go to docs/screenshots/ (SQLite run)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect
from pydicom.uid import CTImageStorage
from sqlalchemy import update

from pair.accounts import service as accounts
from pair.accounts.models import Facility
from pair.core.node import Node
from pair.repository.models import Instance
from tests.portal_data import PASSWORD, World
from tests.web import test_browser as portal

pytestmark = [pytest.mark.integration, pytest.mark.browser]
browser = portal.browser  # the portal's fixtures: Chromium and a live uvicorn server
server = portal.server
GOLDEN = yaml.safe_load((Path(__file__).parent / "data" / "golden.yaml").read_text())
SENTENCE = GOLDEN["sentences"]
NEGATIVE_FINDINGS = {
    "reverse_halo": "absent",
    "small_nodules": "absent",
    "cavitation": "absent",
    "septal_thickening": "absent",
    "pleural_effusion": "absent",
}


def choose(page: Page, element: str, value: str) -> None:
    page.locator(f'[data-element="{element}"] input[value="{value}"]').check()


def field(page: Page, element: str) -> object:
    return page.locator(f'[data-element="{element}"]')


def open_report(page: Page, base: str, case_id: int, module_label: str) -> str:
    page.goto(f"{base}/cases/{case_id}")
    page.get_by_label("Report module").select_option(label=module_label)
    page.get_by_role("button", name="Report", exact=True).click()
    expect(page.get_by_role("heading", name=module_label)).to_be_visible()
    expect(page.locator("#report-status")).to_have_text("draft")
    return page.url


def test_report_form_in_browser(
    browser: Browser, server: tuple[str, World], node: Node, database_url: str
) -> None:
    base, world = server
    screenshots = database_url.startswith("sqlite")
    with node.db.session() as s:
        b = s.get(Facility, world.facilities["B"])
        assert b is not None
        accounts.create_user(s, b, "radiologist-b", "radiologist", PASSWORD)
        # the portal's test cases are index rows only; an SR's evidence needs SOP classes
        s.execute(update(Instance).values(sop_class_uid=CTImageStorage))
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(20000)
    portal.sign_in(page, base, "radiologist-a")

    # typical case: GGO present reveals its detail fields; sides chosen with the arrow keys
    case_typical = world.cases["HOSPA-00001"]
    report_url = open_report(page, base, case_typical, "COVID-19 chest CT (RSNA consensus)")
    expect(page.locator("#preview-findings")).to_be_visible()
    # an empty form previews no category: it says what is still needed
    expect(page.locator("#preview-impression")).to_have_text(
        "No category until the required findings are answered."
    )
    expect(page.locator("#preview-missing")).to_contain_text("Still needed: Ground glass opacity")
    expect(page.locator("#comp-category")).to_have_text("—")
    expect(page.locator("#preview-title")).to_have_text("Report preview")
    expect(page.locator('[data-element="ggo_side"]')).to_be_hidden()
    expect(page.locator('[data-element="ggo"] .cde-inferred')).to_have_text("inferred code")
    choose(page, "ggo", "present")
    expect(page.locator('[data-element="ggo_side"]')).to_be_visible()
    choose(page, "ggo_side", "right")
    page.keyboard.press("ArrowRight")  # right -> left
    page.keyboard.press("ArrowRight")  # left -> bilateral
    expect(page.locator('[data-element="ggo_side"] input[value="bilateral"]')).to_be_checked()
    choose(page, "ggo_location", "peripheral")
    choose(page, "ggo_rounded", "absent")
    choose(page, "consolidation", "absent")
    for element, value in NEGATIVE_FINDINGS.items():
        choose(page, element, value)
    expect(page.locator("#preview-impression")).to_have_text(SENTENCE["typical"] + " [Cov19Typ]")
    expect(page.locator("#comp-category")).to_have_text("Typical appearance")
    expect(page.locator("#preview-findings")).to_contain_text(
        "Side of ground glass opacity: bilateral."
    )
    expect(page.locator("#preview-missing")).to_have_text("All required findings entered.")
    expect(page.locator("#save-status")).to_contain_text("Draft saved")
    page.locator('[data-element="ggo_side"] input[value="bilateral"]').focus()
    portal.shot(page, "report-form", screenshots)
    page.get_by_role("button", name="Sign report").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Signed version 1 (final); the DICOM SR is stored in the study"
    )
    expect(page.locator("#report-status")).to_have_text("final")
    expect(page.locator("#preview-title")).to_have_text("Signed report")
    expect(page.locator("#preview-impression")).to_contain_text(SENTENCE["typical"])
    expect(page.locator('[data-element="ggo"] input[value="present"]')).to_be_disabled()
    report_id = int(report_url.rsplit("/", 1)[1])

    # the SR is in the study: QIDO-RS finds a new SR series and the case page lists it
    study_uid = page.locator(".study-line .mono").inner_text()
    qido = page.request.get(f"{base}/dicomweb/studies/{study_uid}/series?Modality=SR")
    assert qido.status == 200, qido.text()
    series = qido.json()
    assert len(series) == 1 and series[0]["00080060"]["Value"] == ["SR"]
    page.goto(f"{base}/cases/{case_typical}")
    sr_tile = page.locator(".thumb-sr")
    expect(sr_tile).to_have_count(1)
    expect(sr_tile).to_contain_text("SR")
    expect(page.locator(".report-list")).to_contain_text("final")
    sr_tile.click()
    expect(page).to_have_url(re.compile(rf"/reports/{report_id}$"))

    # downloads: text, FHIR and DICOM SR of the signed version
    text = page.request.get(f"{base}/api/reports/{report_id}/download/text?version=1").text()
    assert SENTENCE["typical"] in text
    assert f"Study UID: {study_uid}" in text and "Patient (pseudonym): " in text
    assert re.search(r"Study date: \d{4}-\d{2}-\d{2}", text), text
    hl7 = page.request.get(f"{base}/api/reports/{report_id}/download/hl7?version=1")
    assert hl7.status == 200 and hl7.text().startswith("MSH|")
    fhir = page.request.get(f"{base}/api/reports/{report_id}/download/fhir?version=1").json()
    assert fhir["resourceType"] == "Bundle"
    sr = page.request.get(f"{base}/api/reports/{report_id}/download/sr?version=1").body()
    assert sr[128:132] == b"DICM"
    expect(page.locator("#versions-table")).to_contain_text("DICOM SR")
    expect(page.locator("#versions-table")).to_contain_text("HL7 v2 ORU")
    expect(page.locator(".study-line")).not_to_contain_text("\\")

    # amend: a reason is required; a new draft version, the signed one stays
    page.get_by_label("Reason for the amendment").fill("Lymphadenopathy not described")
    page.get_by_role("button", name="Amend report").click()
    expect(page.locator("#report-status")).to_have_text("draft")
    expect(page.locator("#versions-table tbody tr")).to_have_count(2)
    choose(page, "lymphadenopathy", "present")
    expect(page.locator("#save-status")).to_contain_text("Draft saved")
    page.get_by_role("button", name="Sign report").click()
    expect(page.locator("#report-status")).to_have_text("amended")

    # atypical case: consolidation without GGO asks whether it is isolated lobar/segmental
    case_atypical = world.cases["HOSPA-00003"]
    atypical_url = open_report(page, base, case_atypical, "COVID-19 chest CT (RSNA consensus)")
    choose(page, "ggo", "absent")
    expect(page.locator('[data-element="lobar_consolidation"]')).to_be_hidden()
    choose(page, "consolidation", "present")
    expect(page.locator('[data-element="lobar_consolidation"]')).to_be_visible()
    choose(page, "lobar_consolidation", "present")
    for element, value in NEGATIVE_FINDINGS.items():
        choose(page, element, value)
    expect(page.locator("#preview-impression")).to_have_text(SENTENCE["atypical"] + " [Cov19Aty]")

    # another window saves the report meanwhile: this page's next save gets 409, not a silent
    # overwrite, and says so; after a reload the page holds the new revision and goes on
    page.wait_for_timeout(1500)  # the pending autosave of the last choice has run
    atypical_id = int(atypical_url.rsplit("/", 1)[1])
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    saved = page.request.get(f"{base}/api/reports/{atypical_id}").json()
    other = page.request.put(
        f"{base}/api/reports/{atypical_id}/inputs",
        data=json.dumps({"inputs": saved["current"]["inputs"]}),
        headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
    )
    assert other.status == 200 and other.json()["revision"] > saved["revision"]
    choose(page, "override_category", "indeterminate")
    expect(page.locator("#save-status")).to_contain_text("the report changed elsewhere")
    expect(page.locator("#form-error")).to_contain_text("changed by someone else")
    page.reload()
    expect(page.locator("#preview-impression")).to_have_text(SENTENCE["atypical"] + " [Cov19Aty]")

    # override to indeterminate: the reason becomes required and signing without it fails
    choose(page, "override_category", "indeterminate")
    expect(page.locator('[data-element="override_reason"]')).to_be_visible()
    expect(page.locator("#preview-impression")).to_have_text(
        "No category until the required findings are answered."
    )
    expect(page.locator("#preview-missing")).to_contain_text("Reason for overriding")
    page.get_by_role("button", name="Sign report").click()
    expect(page.locator("#err-override_reason")).to_be_visible()
    expect(page.locator("#err-override_reason")).to_contain_text("required")
    expect(page.locator("#form-error")).to_contain_text("correct the 1 marked field")
    expect(page.locator("#report-status")).to_have_text("draft")
    page.get_by_label("Reason for overriding the computed category").fill(
        "Consolidation pattern with prior imaging suggests COVID-19"
    )
    expect(page.locator("#err-override_reason")).to_be_hidden()
    expect(page.locator("#preview-impression")).to_have_text(
        SENTENCE["indeterminate"] + " [Cov19Ind]"
    )
    # indeterminate against findings that give atypical: signing asks for a confirmation that
    # names both; declining keeps the draft, accepting signs
    asked: list[str] = []

    def answer(accept: bool) -> None:
        def handler(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        page.once("dialog", handler)

    answer(False)
    page.get_by_role("button", name="Sign report").click()
    expect(page.get_by_role("button", name="Sign report")).to_be_enabled()
    assert asked and "Indeterminate appearance" in asked[0] and "Atypical appearance" in asked[0]
    expect(page.locator("#report-status")).to_have_text("draft")
    answer(True)
    page.get_by_role("button", name="Sign report").click()
    expect(page.locator("#report-status")).to_have_text("final")
    assert len(asked) == 2
    expect(page.locator("#preview-findings")).to_contain_text(
        "Reason: Consolidation pattern with prior imaging suggests COVID-19"
    )
    expect(page.locator("#comp-computed_category")).to_have_text("Atypical appearance")

    # CDE catalog page from the navigation
    portal.nav(page, "CDE catalog").click()
    page.locator(".cde-sets").get_by_role("link", name=re.compile("PAIR-RDES1")).click()
    expect(page.locator("#cde-table")).to_contain_text("PAIR-RDE8")
    page.locator(".cde-sets").get_by_role("link", name=re.compile("RDES296")).click()
    expect(page.locator("#cde-table")).to_contain_text("RDE1360.1")
    portal.shot(page, "cde-catalog", screenshots)
    page.get_by_label("Filter elements").fill("rde1605")
    expect(page.locator("#cde-table tbody tr:visible")).to_have_count(1)
    portal.sign_out(page)

    # a data manager sees the form read-only; a radiologist of another facility gets 404
    portal.sign_in(page, base, "datamanager-a")
    page.goto(atypical_url)
    expect(page.locator("#readonly-note")).to_be_visible()
    expect(page.get_by_role("button", name="Sign report")).to_have_count(0)
    portal.sign_out(page)
    portal.sign_in(page, base, "radiologist-b")
    page.goto(report_url)
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert page.request.get(f"{base}/api/reports/{report_id}").status == 404
    ctx.close()
