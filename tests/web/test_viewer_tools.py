"""The series viewer as a radiologist uses it (issue 15, "Radiologist workflow"), in Chromium.

Presets follow the modality (CT lung/mediastinum/bone; a radiograph gets its header window or
the full range, never a CT window), overlays show W/L, slice position and thickness and zoom,
the study's series strip has thumbnails, cine plays, a length is measured in mm from Pixel
Spacing (Imager Pixel Spacing for a radiograph) and an ROI gives the mean and SD in HU from
the decoded frame with its rescale; the report form and the viewer link to each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect
from pydicom.dataset import Dataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.core.node import Node
from pair.reporting import service as reporting
from pair.repository.ingest import Outcome, Payload, ingest_batch
from pair.repository.models import Series, Study
from tests.factories import ct_instance, to_bytes
from tests.portal_data import PASSWORD
from tests.web import test_browser as portal

browser = portal.browser
SIZE = 64
HU_SQUARE = 40  # the square [16:48, 16:48] of every CT slice, on -1000 HU air


def _ct(study: str, series: str, index: int, number: int) -> Dataset:
    ds = ct_instance(study_uid=study, series_uid=series, index=index, size=SIZE)
    ds.SeriesNumber = number
    ds.SeriesDescription = f"AXIAL {number}"
    hu = np.full((SIZE, SIZE), -1000, dtype=np.int32)
    hu[16:48, 16:48] = HU_SQUARE
    ds.PixelRepresentation = 0  # stored = HU + 1024, unsigned: the ROI must apply the rescale
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1.25
    ds.SliceLocation = -100.0 + 1.25 * index
    ds.ImagePositionPatient = [0, 0, -100.0 + 1.25 * index]
    return ds


def _dx(study: str) -> Dataset:
    ds = ct_instance(study_uid=study, series_uid=generate_uid(), index=1, size=SIZE)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.Modality = "DX"
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth",
                    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):  # fmt: skip
        delattr(ds, keyword)
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.PixelRepresentation = 0
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = np.tile(np.arange(SIZE, dtype=np.uint16) * 60, (SIZE, 1)).tobytes()
    return ds


@pytest.fixture
def viewer_world(sqlite_node: Node) -> Iterator[tuple[str, dict[str, Any]]]:
    node = sqlite_node
    with node.db.session() as s:
        facility = accounts.create_facility(s, "Hospital A", "HOSPA")
        user = accounts.create_user(s, facility, "radiologist-a", "radiologist", PASSWORD)
        fid, actor = facility.id, accounts.actor_for(user, "test")
    study = generate_uid()
    first, second = generate_uid(), generate_uid()
    payloads = [Payload(to_bytes(_ct(study, first, i, 2)), f"ct{i}") for i in range(1, 6)]
    payloads += [Payload(to_bytes(_ct(study, second, i, 3)), f"b{i}") for i in range(1, 3)]
    payloads.append(Payload(to_bytes(_dx(generate_uid())), "dx"))
    system = Actor.system("test", facility_id=fid)
    results = ingest_batch(node, fid, payloads, "test", system)
    assert all(r.outcome is Outcome.STORED for r in results), results
    with node.db.session() as s:
        rows = s.execute(select(Series, Study).join(Study, Study.id == Series.study_pk)).all()
        ids = {(se.modality, se.series_number): (st.study_uid, se.series_uid) for se, st in rows}
        ct_study = ids[("CT", 2)][0]
        report = reporting.create_draft(s, actor, ct_study, "rsna-ct-covid")
        ids["report"] = report.id
    with portal.serve_app(node) as base:
        yield base, ids


def _image_geometry(page: Page) -> dict[str, float]:
    return page.evaluate(
        """() => { const img = document.getElementById('image');
        const r = img.getBoundingClientRect();
        const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
        return {left: r.left + (r.width - img.naturalWidth * s) / 2,
                top: r.top + (r.height - img.naturalHeight * s) / 2, s: s}; }"""
    )


def _drag(page: Page, a: tuple[float, float], b: tuple[float, float]) -> None:
    g = _image_geometry(page)
    page.mouse.move(g["left"] + a[0] * g["s"], g["top"] + a[1] * g["s"])
    page.mouse.down()
    page.mouse.move(g["left"] + b[0] * g["s"], g["top"] + b[1] * g["s"], steps=4)
    page.mouse.up()


def _last_number(page: Page, pattern: str) -> float:
    text = page.locator("#measure-list li").last.inner_text()
    found = re.search(pattern, text)
    assert found, text
    return float(found.group(1))


def test_viewer_tools_in_browser(
    browser: Browser, viewer_world: tuple[str, dict[str, Any]]
) -> None:
    base, ids = viewer_world
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(20000)
    portal.sign_in(page, base, "radiologist-a")

    # the report form opens the study's images, and the viewer leads back to the report
    page.goto(f"{base}/reports/{ids['report']}")
    page.locator("#open-viewer").click()
    expect(page.locator("#back-to-report")).to_have_attribute("href", f"/reports/{ids['report']}")
    study, series = ids[("CT", 2)]
    expect(page).to_have_url(re.compile(rf"/viewer/{study}/{series}\?report="))
    page.wait_for_function("() => document.getElementById('image').naturalWidth > 0")

    # CT presets, overlays with W/L, position, thickness and zoom
    for name in ("Lung", "Mediastinum", "Bone"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
    expect(page.locator("#ov-pos")).to_have_text("Pos -98.8 mm · Thk 1.25 mm")
    expect(page.locator("#ov-wl")).to_have_text("W 1500 / L -600")  # the header's window
    page.get_by_role("button", name="Mediastinum").click()
    expect(page.locator("#ov-wl")).to_have_text("W 400 / L 40")
    page.get_by_role("button", name="Zoom in").click()
    expect(page.locator("#ov-zoom")).to_have_text("Zoom 120%")
    page.get_by_role("button", name="Reset").click()
    page.locator("#viewport").focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#ov-pos")).to_have_text("Pos -97.5 mm · Thk 1.25 mm")
    page.keyboard.press("Home")
    page.wait_for_function("() => document.getElementById('image').complete")

    # length from Pixel Spacing (0.5 mm): 40 pixels across is 20 mm
    page.get_by_role("button", name="Length").click()
    _drag(page, (8, 32), (48, 32))
    assert _last_number(page, r"([\d.]+) mm") == pytest.approx(20.0, abs=0.2)
    # ROI inside the 40 HU square: the stored values are rescaled (intercept -1024)
    page.get_by_role("button", name="ROI").click()
    _drag(page, (20, 20), (44, 44))
    expect(page.locator("#measure-list li")).to_have_count(2)
    assert _last_number(page, r"mean (-?[\d.]+) HU") == pytest.approx(HU_SQUARE, abs=0.01)
    assert _last_number(page, r"SD ([\d.]+) HU") == pytest.approx(0.0, abs=0.01)
    expect(page.locator("#measures line")).to_have_count(1)
    expect(page.locator("#measures rect")).to_have_count(1)
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#measure-list li")).to_have_count(0)

    # cine plays through the series and pauses
    page.get_by_role("button", name="Play").click()
    expect(page.locator("#counter")).not_to_have_text("1 / 5")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Play")).to_be_visible()

    # the series strip: a thumbnail per image series, the other one opens in the viewer
    strip = page.locator(".series-strip .strip-item")
    expect(strip).to_have_count(2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.strip-item img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    strip.nth(1).click()
    expect(page).to_have_url(re.compile(rf"/viewer/{study}/{ids[('CT', 3)][1]}"))
    expect(page.locator("#counter")).to_have_text("1 / 2")
    expect(page.locator("#back-to-report")).to_be_visible()

    # a radiograph: no CT presets, its header window or the full range; mm from Imager Pixel Spacing
    dx_study, dx_series = next(v for k, v in ids.items() if isinstance(k, tuple) and k[0] == "DX")
    page.goto(f"{base}/viewer/{dx_study}/{dx_series}")
    page.wait_for_function("() => document.getElementById('image').naturalWidth > 0")
    expect(page.get_by_role("button", name="Lung")).to_have_count(0)
    expect(page.get_by_role("button", name="Header / full range")).to_be_visible()
    expect(page.locator("#ov-wl")).to_have_text("full range")
    expect(page.locator("#image")).not_to_have_attribute("src", re.compile("window="))
    page.get_by_role("button", name="Length").click()
    _drag(page, (10, 10), (10, 60))
    assert _last_number(page, r"([\d.]+) mm") == pytest.approx(10.0, abs=0.2)
    ctx.close()
