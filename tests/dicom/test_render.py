"""WADO-RS rendering: VOI windows per PS3.3 C.11.2.1.2, VOI LUTs, MONOCHROME1, 16-bit CT."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.uid import generate_uid

from pair.core.errors import BadRequest, NotAcceptable
from pair.dicom.render import RenderOptions, render, to_8bit, voi
from tests.factories import ct_instance


def _linear(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.2.1, written out as the standard gives it (ymin 0, ymax 255)."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 255.0
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0


def _linear_exact(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.3.2."""
    if x <= c - w / 2:
        return 0.0
    if x > c + w / 2:
        return 255.0
    return ((x - c) / w + 0.5) * 255.0


def _sigmoid(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.3.1."""
    return 255.0 / (1 + math.exp(-4 * (x - c) / w))


@pytest.mark.parametrize(
    ("function", "reference"),
    [("LINEAR", _linear), ("LINEAR_EXACT", _linear_exact), ("SIGMOID", _sigmoid)],
)
@pytest.mark.parametrize(("center", "width"), [(40.0, 400.0), (-600.0, 1500.0), (0.0, 2.0)])
def test_voi_functions_follow_the_standard(
    function: str, reference: object, center: float, width: float
) -> None:
    x = np.linspace(center - width, center + width, 401)
    got = voi(x, center, width, function) * 255.0
    want = np.array([reference(float(v), center, width) for v in x])  # type: ignore[operator]
    assert np.allclose(got, want, atol=1e-9)


def test_linear_window_of_width_one_is_a_threshold() -> None:
    x = np.array([-1.0, -0.5, -0.49, 0.0, 3.0])
    assert list(voi(x, 0.0, 1.0)) == [0.0, 0.0, 1.0, 1.0, 1.0]


def _ct_16bit() -> Dataset:
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=16)
    ds.RescaleIntercept = -1024
    ds.PixelRepresentation = 0
    stored = np.linspace(0, 3071, 256).reshape(16, 16).astype(np.uint16)  # -1024..2047 HU
    ds.PixelData = stored.tobytes()
    return ds


def test_ct_window_from_request_is_applied_in_hounsfield_units() -> None:
    ds = _ct_16bit()
    hu = ds.pixel_array.astype(np.float64) - 1024
    opts = RenderOptions.from_query("image/png", "40,400", None, None)
    got = to_8bit(ds, hu, opts)
    want = np.rint([[_linear(v, 40, 400) for v in row] for row in hu]).astype(np.uint8)
    assert (got == want).all()
    assert got.min() == 0 and got.max() == 255

    png = Image.open(io.BytesIO(render(ds, 1, opts)))
    assert png.mode == "L" and (np.asarray(png) == want).all()


def test_header_window_and_its_function_are_the_default() -> None:
    ds = _ct_16bit()
    ds.WindowCenter, ds.WindowWidth = [-600, 40], [1500, 400]  # the first pair is the default
    hu = ds.pixel_array.astype(np.float64) - 1024
    plain = to_8bit(ds, hu, RenderOptions())
    assert (plain == np.rint(voi(hu, -600, 1500) * 255)).all()
    ds.VOILUTFunction = "SIGMOID"
    curved = to_8bit(ds, hu, RenderOptions())
    assert (curved == np.rint(voi(hu, -600, 1500, "SIGMOID") * 255)).all()
    assert not (curved == plain).all()


def test_voi_lut_sequence_is_used_without_a_window() -> None:
    ds = _ct_16bit()
    del ds.WindowCenter, ds.WindowWidth
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]  # 4 entries, first maps 0 HU-space value, 8-bit output
    item.LUTData = [0, 10, 200, 255]
    ds.VOILUTSequence = [item]
    x = np.array([[-5.0, 0.0, 1.0, 2.0, 3.0, 99.0]])
    got = to_8bit(ds, x, RenderOptions())
    assert got.tolist() == [[0, 0, 10, 200, 255, 255]]


def test_monochrome1_is_inverted(shared_data: Path) -> None:
    ds = pydicom.dcmread(shared_data / "dicom" / "highdicom_dx_image.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    arr = ds.pixel_array.astype(np.float64)
    shown = to_8bit(ds, arr, RenderOptions())
    ds.PhotometricInterpretation = "MONOCHROME2"
    direct = to_8bit(ds, arr, RenderOptions())
    assert (shown.astype(int) == 255 - direct.astype(int)).all()
    assert shown[arr == arr.max()].max() < shown[arr == arr.min()].min()  # high values dark


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("40", "center,width"),
        ("40,400,cubic", "cubic"),
        ("40,0.5", "at least 1"),
        ("40,0,sigmoid", "positive"),
        ("40,400,linear,4", "center,width"),
    ],
)
def test_bad_window_parameters_are_refused(window: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        RenderOptions.from_query("image/png", window, None, None)


def test_media_types_follow_accept() -> None:
    assert RenderOptions.from_query("image/jpeg, image/png", None, None, None).media_type == (
        "image/jpeg"
    )
    assert RenderOptions.from_query("", None, None, None).media_type == "image/png"
    browser = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
    assert RenderOptions.from_query(browser, None, None, None).media_type == "image/png"
    assert RenderOptions.from_query("a/b, */*", None, None, None).media_type == "image/png"
    with pytest.raises(NotAcceptable, match="image/gif"):
        RenderOptions.from_query("image/gif", None, None, None)
    opts = RenderOptions.from_query("image/png", "1,2,Linear-Exact", None, None)
    assert opts.window_function == "LINEAR_EXACT"
