"""Each preprocessing rule of the manifest, on synthetic datasets and on the real DICOM files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from pair.algorithms.manifest import Aggregation, Manifest, OutputSpec
from pair.algorithms.postprocess import case_score, to_class_values
from pair.algorithms.preprocess import (
    PreprocessError,
    aggregate,
    check_modality,
    modality_values,
    preprocess_dataset,
    preprocess_series,
    read_dataset,
    voi_window,
)
from pair.algorithms.wrap import png_to_dicom
from tests.algorithms.algo_builders import manifest


def spec(**changes: Any) -> Any:
    return Manifest.model_validate(manifest(**changes)).input


def make_ds(pixels: np.ndarray, **attrs: Any) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Modality = "CR"
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    return ds


RAMP = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)  # 0 … 1023


def test_modality_lut_is_applied_to_ct(shared_data: Path) -> None:
    ds = pydicom.dcmread(shared_data / "dicom/pydicom_CT_small.dcm")
    hu = modality_values(ds)[0]
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) != 0
    np.testing.assert_allclose(hu, expected)


def test_ct_window_maps_center_and_edges() -> None:
    ds = make_ds(RAMP.astype(np.uint16), RescaleSlope=1, RescaleIntercept=-1024)
    s = spec(
        **{
            "input.scaling": {"kind": "window", "center": -512, "width": 512},
            "input.size": {"height": 32, "width": 32},
        }
    )
    out = preprocess_dataset(ds, s)[0, 0]
    hu = RAMP - 1024.0
    np.testing.assert_allclose(out, np.clip((hu - (-768)) / 512, 0, 1), atol=1e-6)
    assert out[hu <= -768].max() == 0.0 and out[hu >= -256].min() == 1.0


def test_percentile_scaling_clips_tails() -> None:
    ds = make_ds(RAMP)
    s = spec(**{"input.scaling": {"kind": "percentile", "lower": 10, "upper": 90}})
    out = preprocess_dataset(ds, s)[0, 0]
    lo, hi = np.percentile(RAMP, [10, 90])
    np.testing.assert_allclose(out, np.clip((RAMP - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_minmax_and_voi_lut_scaling() -> None:
    ds = make_ds(RAMP)
    out = preprocess_dataset(ds, spec())[0, 0]
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)
    ds_w = make_ds(RAMP, WindowCenter=512, WindowWidth=256)
    out_w = preprocess_dataset(ds_w, spec(**{"input.scaling": {"kind": "voi_lut"}}))[0, 0]
    # PS3.3 C.11.2.1.2.1 LINEAR: ((x - (c - 0.5)) / (w - 1) + 0.5), i.e. (x - 384) / 255
    np.testing.assert_allclose(out_w, np.clip((RAMP - 384.0) / 255.0, 0, 1), atol=1e-6)
    # without a window in the file, voi_lut falls back to min-max
    out_n = preprocess_dataset(ds, spec(**{"input.scaling": {"kind": "voi_lut"}}))[0, 0]
    np.testing.assert_allclose(out_n, out, atol=1e-6)


# PS3.3 C.11.2.1.2 with y_min = 0, y_max = 1, for c = 512, w = 256:
#   LINEAR (C.11.2.1.2.1):  x <= c - 0.5 - (w-1)/2 = 384 -> 0; x > c - 0.5 + (w-1)/2 = 639 -> 1;
#                                 else (x - (c - 0.5)) / (w - 1) + 0.5 = (x - 511.5) / 255 + 0.5
#   LINEAR_EXACT (C.11.2.1.3.2):  x <= c - w/2 = 384 -> 0; x > c + w/2 = 640 -> 1;
#                                 else (x - c) / w + 0.5 = (x - 512) / 256 + 0.5
#   SIGMOID (C.11.2.1.3.1):       1 / (1 + exp(-4 (x - c) / w)) = 1 / (1 + exp(-(x - 512) / 64))
VOI_X = np.array([383.0, 384.0, 385.0, 448.0, 511.5, 512.0, 576.0, 639.0, 640.0, 641.0])
VOI_EXPECTED = {
    # inside the window (x - 511.5) / 255 + 0.5 = (x - 384) / 255: 385 -> 1/255, 639 -> 1
    "LINEAR": [0, 0, 1 / 255, 64 / 255, 0.5, 128 / 255, 192 / 255, 1, 1, 1],
    "LINEAR_EXACT": [0, 0, 1 / 256, 0.25, 127.5 / 256, 0.5, 0.75, 255 / 256, 1, 1],
    "SIGMOID": [
        1 / (1 + np.exp(129 / 64)),
        1 / (1 + np.exp(2.0)),
        1 / (1 + np.exp(127 / 64)),
        1 / (1 + np.exp(1.0)),  # 0.2689414
        1 / (1 + np.exp(0.5 / 64)),
        0.5,
        1 / (1 + np.exp(-1.0)),  # 0.7310586
        1 / (1 + np.exp(-127 / 64)),
        1 / (1 + np.exp(-2.0)),
        1 / (1 + np.exp(-129 / 64)),
    ],
}


@pytest.mark.parametrize("function", sorted(VOI_EXPECTED))
def test_voi_lut_functions_follow_ps33(function: str) -> None:
    got = voi_window(VOI_X, 512.0, 256.0, function)
    np.testing.assert_allclose(got, VOI_EXPECTED[function], atol=1e-6)
    # the same through a dataset carrying the window and its VOI LUT Function
    frame = VOI_X.astype(np.uint16).reshape(1, -1)  # 511.5 -> 511 in stored integers
    ds = make_ds(frame, WindowCenter=512, WindowWidth=256, VOILUTFunction=function)
    out = preprocess_dataset(
        ds,
        spec(
            **{
                "input.scaling": {"kind": "voi_lut"},
                "input.size": {"height": 1, "width": VOI_X.size},
            }
        ),
    )[0, 0, 0]
    np.testing.assert_allclose(
        out, voi_window(frame[0].astype(float), 512, 256, function), atol=1e-6
    )


def test_voi_lut_edge_cases() -> None:
    # LINEAR with width 1 is a step at c - 0.5: x <= 99.5 -> 0, else 1
    np.testing.assert_array_equal(voi_window(np.array([99.0, 100.0]), 100, 1, "LINEAR"), [0, 1])
    with pytest.raises(PreprocessError, match="below 1"):
        voi_window(np.array([1.0]), 100, 0.5, "LINEAR")
    np.testing.assert_allclose(voi_window(np.array([100.0]), 100, 0.5, "LINEAR_EXACT"), [0.5])
    with pytest.raises(PreprocessError, match="VOI LUT Function"):
        voi_window(np.array([1.0]), 100, 10, "GAMMA")


def test_monochrome1_inversion_and_opt_out() -> None:
    m2 = preprocess_dataset(make_ds(RAMP), spec())[0, 0]
    m1_ds = make_ds(RAMP, PhotometricInterpretation="MONOCHROME1")
    m1 = preprocess_dataset(m1_ds, spec())[0, 0]
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    kept = preprocess_dataset(m1_ds, spec(**{"input.invert_monochrome1": False}))[0, 0]
    np.testing.assert_allclose(kept, m2, atol=1e-6)


def test_monochrome1_real_file_matches_inverted_wrap(shared_data: Path, tmp_path: Path) -> None:
    png = shared_data / "images/s0001.png"
    a = png_to_dicom(png, tmp_path / "m2.dcm")
    b = png_to_dicom(png, tmp_path / "m1.dcm", monochrome1=True)
    s = spec(**{"input.size": {"height": 64, "width": 64}})
    np.testing.assert_allclose(preprocess_dataset(a, s), preprocess_dataset(b, s), atol=1e-5)
    dog = pydicom.dcmread(shared_data / "dicom/highdicom_dx_image.dcm")
    assert dog.PhotometricInterpretation == "MONOCHROME1"
    inv = preprocess_dataset(dog, s)[0, 0]
    raw = preprocess_dataset(
        dog, spec(**{"input.invert_monochrome1": False, "input.size": {"height": 64, "width": 64}})
    )[0, 0]
    np.testing.assert_allclose(inv, 1.0 - raw, atol=1e-5)


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "lanczos", "area"])
def test_resize_methods(method: str) -> None:
    checker = (np.indices((64, 64)).sum(axis=0) // 2 % 2 * 1000).astype(np.uint16)
    ds = make_ds(checker)
    out = preprocess_dataset(
        ds, spec(**{"input.resampling": method, "input.size": {"height": 16, "width": 24}})
    )
    assert out.shape == (1, 1, 16, 24)
    assert out.min() >= 0.0 and out.max() <= 1.0
    if method == "area":  # 2x2 checker averaged over 4x~2.7 boxes: close to grey
        assert abs(float(out.mean()) - 0.5) < 0.05
    if method == "nearest":
        assert set(np.unique(out)) <= {0.0, 1.0}


def test_channels_normalization_layout_dtype() -> None:
    ds = make_ds(RAMP)
    s3 = spec(
        **{
            "input.channels": 3,
            "input.normalization": {
                "kind": "meanstd",
                "mean": [0.1, 0.2, 0.3],
                "std": [0.5, 0.25, 1.0],
            },
        }
    )
    out = preprocess_dataset(ds, s3)
    base = preprocess_dataset(ds, spec())[0, 0]
    assert out.shape == (1, 3, 32, 32) and out.dtype == np.float32
    for c, (m, sd) in enumerate([(0.1, 0.5), (0.2, 0.25), (0.3, 1.0)]):
        np.testing.assert_allclose(out[0, c], (base - m) / sd, atol=1e-5)
    rng_spec = spec(
        **{
            "input.normalization": {"kind": "range", "min": -1, "max": 1},
            "input.layout": "NHWC",
            "input.dtype": "float16",
        }
    )
    out2 = preprocess_dataset(ds, rng_spec)
    assert out2.shape == (1, 32, 32, 1) and out2.dtype == np.float16
    np.testing.assert_allclose(out2[0, :, :, 0], base * 2 - 1, atol=2e-3)


def test_multiframe_and_series() -> None:
    frames = np.stack([RAMP, RAMP[::-1]]).astype(np.uint16)
    ds = make_ds(frames)
    out = preprocess_dataset(ds, spec())
    assert out.shape == (2, 1, 32, 32)
    np.testing.assert_allclose(out[1, 0], out[0, 0][::-1], atol=1e-6)
    series = preprocess_series([make_ds(RAMP), ds], spec())
    assert series.shape == (3, 1, 32, 32)
    with pytest.raises(PreprocessError, match="empty case"):
        preprocess_series([], spec())


def test_modality_check_and_unreadable(shared_data: Path, tmp_path: Path) -> None:
    ct = read_dataset(shared_data / "dicom/pydicom_CT_small.dcm")
    with pytest.raises(PreprocessError) as err:
        check_modality(ct, ["CR", "DX"])
    assert err.value.reason == "wrong modality" and "CT" in err.value.message
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(PreprocessError) as err2:
        modality_values(read_dataset(bad))
    assert err2.value.reason == "unreadable DICOM"


def test_jpeg_baseline_cr_decodes(shared_data: Path) -> None:
    ds = read_dataset(shared_data / "dicom/txv_siim_cr_chest_pa.dcm")
    out = preprocess_dataset(ds, spec(**{"input.size": {"height": 64, "width": 64}}))
    assert out.shape == (1, 1, 64, 64) and np.isfinite(out).all() and out.std() > 0.05


def test_aggregation_rules() -> None:
    per = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    np.testing.assert_allclose(aggregate(per, Aggregation.MAX), [0.9, 0.8])
    np.testing.assert_allclose(aggregate(per, Aggregation.MEAN), [0.5, 0.5])
    np.testing.assert_allclose(aggregate(per, Aggregation.MEDIAN), [0.4, 0.6])
    np.testing.assert_allclose(aggregate(per, Aggregation.FIRST), [0.9, 0.1])


def test_output_activations() -> None:
    logit = OutputSpec.model_validate({**manifest()["output"], "values": "logits"})
    v = to_class_values(np.array([[0.0], [2.0]]), logit)
    np.testing.assert_allclose(v[:, 1], [0.5, 1 / (1 + np.exp(-2))])
    np.testing.assert_allclose(v.sum(axis=1), 1.0)
    assert case_score(v[1], logit) == pytest.approx(v[1, 1])
    two = to_class_values(np.array([[1.0, 3.0]]), logit)
    np.testing.assert_allclose(two[0], np.exp([1, 3]) / np.exp([1, 3]).sum())
    first_pos = OutputSpec.model_validate({**manifest()["output"], "positive_class": "absent"})
    v2 = to_class_values(np.array([0.7]), first_pos)
    np.testing.assert_allclose(v2[0], [0.7, 0.3])
    multi = OutputSpec.model_validate(
        {
            "kind": "multiclass",
            "tensor_name": "p",
            "values": "logits",
            "classes": [{"name": n, "label": n} for n in ("a", "b", "c")],
        }
    )
    with pytest.raises(ValueError, match="expected \\[3\\]"):
        to_class_values(np.zeros((1, 2)), multi)


def test_describe_for_reports() -> None:
    import yaml

    from tests.algorithms.algo_builders import DEMO_DIR

    m = Manifest.model_validate(yaml.safe_load((DEMO_DIR / "pair-algorithm.yaml").read_text()))
    assert m.input.describe() == (
        "Modality LUT, percentile scaling (1–99), MONOCHROME1 inverted, resized to 64×64 "
        "(area), 1 channel(s), normalized (x − [0.5]) / [0.25], NCHW float32; several images "
        "per case combined by max."
    )
