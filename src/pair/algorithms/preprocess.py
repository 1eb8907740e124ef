"""DICOM instance (or series) → model input tensor, exactly as the manifest's ``input`` says.

Order: stored values → Modality LUT (rescale slope/intercept) → scaling to [0, 1] (window,
percentile, min-max or the image's VOI LUT) → MONOCHROME1 inversion → resize → channel
replication → normalization → layout and dtype. Each frame of a multi-frame instance is an image.

A slab package (``input.slab``, 2.5D CT) takes a whole series: its instances are ordered along
the slice normal, every slice is prepared the same way up to the resize (one channel each), and
the slab centred on each slice stacks ``slices`` of them as channels (ends replicated).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from pair.algorithms.manifest import (
    Aggregation,
    InputSpec,
    Layout,
    MeanStdNormalization,
    MinMaxScaling,
    PercentileScaling,
    RangeNormalization,
    Resampling,
    VoiLutScaling,
    WindowScaling,
)

_PIL_FILTERS = {
    Resampling.NEAREST: Image.Resampling.NEAREST,
    Resampling.BILINEAR: Image.Resampling.BILINEAR,
    Resampling.BICUBIC: Image.Resampling.BICUBIC,
    Resampling.LANCZOS: Image.Resampling.LANCZOS,
    Resampling.AREA: Image.Resampling.BOX,
}


class PreprocessError(Exception):
    """A case cannot be fed to the model; ``reason`` is a short category shown to users."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def read_dataset(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for bad files
        raise PreprocessError("unreadable DICOM", f"{type(exc).__name__}") from exc


def check_modality(ds: Dataset, allowed: Sequence[str]) -> None:
    modality = str(ds.get("Modality", "") or "")
    if modality not in allowed:
        shown = modality or "(none)"
        raise PreprocessError(
            "wrong modality", f"Modality {shown} is not one of {', '.join(allowed)}"
        )


def modality_values(ds: Dataset) -> np.ndarray:
    """Frames as float32 ``[F, H, W]`` after the Modality LUT (e.g. Hounsfield units)."""
    if "PixelData" not in ds:
        raise PreprocessError("unreadable DICOM", "instance has no (integer) pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise PreprocessError("unreadable DICOM", f"pixel data: {type(exc).__name__}") from exc
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if samples == 3:  # colour (e.g. secondary capture): luminance, no modality LUT
        arr = arr.reshape((frames, *arr.shape[-3:])).astype(np.float32)
        return np.asarray(arr @ np.array([0.299, 0.587, 0.114], np.float32), np.float32)
    if samples != 1:
        raise PreprocessError("unsupported image", f"SamplesPerPixel {samples}")
    values = apply_modality_lut(arr, ds).astype(np.float32)
    return values.reshape((frames, *values.shape[-2:]))


def scale_to_unit(frame: np.ndarray, spec: InputSpec, ds: Dataset | None = None) -> np.ndarray:
    """One frame of modality values → [0, 1] by the manifest's scaling rule."""
    sc = spec.scaling
    if isinstance(sc, WindowScaling):
        lo, hi = sc.center - sc.width / 2.0, sc.center + sc.width / 2.0
    elif isinstance(sc, PercentileScaling):
        lo, hi = (float(v) for v in np.percentile(frame, [sc.lower, sc.upper]))
    elif isinstance(sc, VoiLutScaling) and ds is not None and _has_voi(ds):
        return image_voi(frame, ds)
    else:
        assert isinstance(sc, MinMaxScaling | VoiLutScaling)
        lo, hi = float(frame.min()), float(frame.max())
    if hi <= lo:
        return np.zeros_like(frame, dtype=np.float32)
    return np.clip((frame - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def voi_window(frame: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing onto [0, 1] (y_min 0, y_max 1) by VOI LUT Function.

    LINEAR (the default, C.11.2.1.2.1; width >= 1): 0 for x <= c - 0.5 - (w - 1) / 2,
    1 for x > c - 0.5 + (w - 1) / 2, else ((x - (c - 0.5)) / (w - 1) + 0.5).
    LINEAR_EXACT (C.11.2.1.3.2; width > 0): 0 for x <= c - w / 2, 1 for x > c + w / 2,
    else (x - c) / w + 0.5. SIGMOID (C.11.2.1.3.1; width > 0): 1 / (1 + exp(-4 (x - c) / w)).
    """
    x = frame.astype(np.float64)
    kind = (function or "LINEAR").strip().upper()
    if kind == "SIGMOID":
        if width <= 0:
            raise PreprocessError("unsupported image", f"Window Width {width:g} for SIGMOID")
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if kind == "LINEAR_EXACT":
        if width <= 0:
            raise PreprocessError("unsupported image", f"Window Width {width:g} for LINEAR_EXACT")
        y = (x - center) / width + 0.5
        y = np.where(x <= center - width / 2, 0.0, np.where(x > center + width / 2, 1.0, y))
        return y.astype(np.float32)
    if kind != "LINEAR":
        raise PreprocessError("unsupported image", f"VOI LUT Function {kind}")
    if width < 1:
        raise PreprocessError("unsupported image", f"Window Width {width:g} below 1 for LINEAR")
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    if width == 1:  # a step: (w - 1) is 0 and the middle branch is empty
        return (x > low).astype(np.float32)
    y = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.where(x <= low, 0.0, np.where(x > high, 1.0, y)).astype(np.float32)


def image_voi(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """The image's first window (with its VOI LUT Function), else its VOI LUT Sequence
    scaled by the LUT's output range (LUT Descriptor bits), onto [0, 1]."""
    if "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "") or "LINEAR")
        return voi_window(frame, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    lut = ds.VOILUTSequence[0]
    bits = int(lut.LUTDescriptor[2]) or 16
    out = apply_voi_lut(frame, ds).astype(np.float32) / float(2**bits - 1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _has_voi(ds: Dataset) -> bool:
    return ("WindowCenter" in ds and "WindowWidth" in ds) or "VOILUTSequence" in ds


def _first(value: Any) -> float:
    """Window Center/Width may be multi-valued; the first pair is the default window."""
    if isinstance(value, str | bytes) or not hasattr(value, "__getitem__"):
        return float(value)
    return float(value[0])


def resize(frame: np.ndarray, height: int, width: int, resampling: Resampling) -> np.ndarray:
    if frame.shape == (height, width):
        return frame.astype(np.float32, copy=False)
    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.float32), mode="F")
    out = img.resize((width, height), resample=_PIL_FILTERS[resampling])
    return np.asarray(out, dtype=np.float32)


def normalize(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] → normalized values."""
    norm = spec.normalization
    if isinstance(norm, MeanStdNormalization):
        mean = np.asarray(norm.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(norm.std, np.float32).reshape(-1, 1, 1)
        return (image - mean) / std
    assert isinstance(norm, RangeNormalization)
    return image * np.float32(norm.max - norm.min) + np.float32(norm.min)


def prepare_frame(frame: np.ndarray, spec: InputSpec, ds: Dataset) -> np.ndarray:
    """One frame of modality values → resized ``[H, W]`` image in [0, 1] (one channel)."""
    unit = scale_to_unit(frame, spec, ds)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1" and spec.invert_monochrome1:
        unit = 1.0 - unit
    small = resize(unit, spec.size.height, spec.size.width, spec.resampling)
    return np.clip(small, 0.0, 1.0)  # bicubic/lanczos overshoot


def _to_layout(batch: np.ndarray, spec: InputSpec) -> np.ndarray:
    if spec.layout == Layout.NHWC:
        batch = batch.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(batch, dtype=spec.dtype.value)


def preprocess_dataset(ds: Dataset, spec: InputSpec) -> np.ndarray:
    """One instance → ``[F, ...]`` batch (one item per frame) in the manifest's layout/dtype."""
    items = []
    for frame in modality_values(ds):
        small = prepare_frame(frame, spec, ds)
        chw = np.repeat(small[None], spec.channels, axis=0)
        items.append(normalize(chw, spec))
    return _to_layout(np.stack(items), spec)


def slice_position(ds: Dataset) -> float | None:
    """Position along the slice normal: Image Position (Patient) · (row × column direction)."""
    try:
        iop = [float(v) for v in ds.ImageOrientationPatient]
        ipp = [float(v) for v in ds.ImagePositionPatient]
    except (AttributeError, TypeError, ValueError):
        return None
    if len(iop) != 6 or len(ipp) != 3:
        return None
    normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    if not np.isfinite(normal).all() or float(np.linalg.norm(normal)) < 1e-6:
        return None
    return float(np.dot(np.asarray(ipp), normal))


def slice_order(datasets: Sequence[Dataset]) -> list[int]:
    """Indices of ``datasets`` sorted along the slice normal; by Instance Number when any
    instance lacks a usable position or orientation (ties keep the given order)."""
    positions = [slice_position(ds) for ds in datasets]
    if all(p is not None for p in positions):
        return sorted(range(len(datasets)), key=lambda i: (positions[i], i))

    def number(i: int) -> int:
        try:
            return int(datasets[i].get("InstanceNumber", 0) or 0)
        except (TypeError, ValueError):
            return 0

    return sorted(range(len(datasets)), key=lambda i: (number(i), i))


def slab_indices(n: int, centre: int, slices: int, step: int) -> list[int]:
    """Slice indices of the slab centred on ``centre``; beyond either end, the end repeats."""
    half = slices // 2
    return [min(max(centre + step * (j - half), 0), n - 1) for j in range(slices)]


def preprocess_slabs(datasets: Sequence[Dataset], spec: InputSpec) -> np.ndarray:
    """A CT series → ``[N, ...]`` batch: item ``i`` is the slab centred on ``datasets[i]``
    (the given order is kept in the output; the slab neighbours follow the slice normal)."""
    slab = spec.slab
    if slab is None:
        raise ValueError("preprocess_slabs needs an input spec with a slab")
    if not datasets:
        raise PreprocessError("empty case", "no instances")
    order = slice_order(datasets)
    images = []
    for i in order:
        frames = modality_values(datasets[i])
        if len(frames) != 1:
            raise PreprocessError(
                "unsupported image", f"multi-frame instance ({len(frames)} frames) in a slab series"
            )
        images.append(prepare_frame(frames[0], spec, datasets[i]))
    stack = np.stack(images)  # [N, H, W] along the normal
    rank = {original: sorted_at for sorted_at, original in enumerate(order)}
    n = len(order)
    items = [
        normalize(stack[slab_indices(n, rank[i], slab.slices, slab.step)], spec) for i in range(n)
    ]
    return _to_layout(np.stack(items), spec)


def preprocess_series(datasets: Sequence[Dataset], spec: InputSpec) -> np.ndarray:
    """Several instances (a series or study) → one ``[N, ...]`` batch, instance order kept."""
    if not datasets:
        raise PreprocessError("empty case", "no instances")
    return np.concatenate([preprocess_dataset(ds, spec) for ds in datasets])


def aggregate(per_image: np.ndarray, rule: Aggregation) -> np.ndarray:
    """``[N, K]`` per-image outputs → ``[K]`` case output by the manifest's rule."""
    if per_image.ndim != 2 or per_image.shape[0] == 0:
        raise ValueError(f"expected a non-empty [N, K] array, got shape {per_image.shape}")
    if rule == Aggregation.FIRST:
        return np.asarray(per_image[0])
    if rule == Aggregation.MEAN:
        return np.asarray(per_image.mean(axis=0))
    if rule == Aggregation.MEDIAN:
        return np.asarray(np.median(per_image, axis=0))
    return np.asarray(per_image.max(axis=0))
