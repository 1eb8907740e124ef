"""Render frames to 8-bit PNG/JPEG with window/level (WADO-RS ``/rendered``)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from pair.core.errors import BadRequest, NotFound

MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/png"
    window_center: float | None = None
    window_width: float | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90

    @classmethod
    def from_query(
        cls, accept: str, window: str | None, viewport: str | None, quality: int | None
    ) -> RenderOptions:
        media = "image/png"
        for part in (accept or "").split(","):
            kind = part.split(";")[0].strip().lower()
            if kind in MEDIA_TYPES:
                media = kind
                break
        center = width = None
        if window:
            bits = window.split(",")
            try:
                center, width = float(bits[0]), float(bits[1])
            except (ValueError, IndexError):
                raise BadRequest("window must be 'center,width[,function]'.") from None
            if width <= 0:
                raise BadRequest("window width must be positive.")
        vp = None
        if viewport:
            try:
                w, h = (int(v) for v in viewport.split(",")[:2])
            except ValueError:
                raise BadRequest("viewport must be 'width,height'.") from None
            if not (0 < w <= 4096 and 0 < h <= 4096):
                raise BadRequest("viewport sizes must be between 1 and 4096.")
            vp = (w, h)
        q = 90 if quality is None else quality
        if not 1 <= q <= 100:
            raise BadRequest("quality must be between 1 and 100.")
        return cls(media, center, width, vp, q)


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or value.__class__.__name__ == "MultiValue":
        value = value[0]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def frame_array(ds: Dataset, frame: int = 1) -> np.ndarray:
    """One frame (1-based) after the modality LUT (HU for CT)."""
    if "PixelData" not in ds:
        raise NotFound("This instance has no pixel data to render.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= frames:
        raise NotFound(f"Frame {frame} does not exist; the instance has {frames} frame(s).")
    arr = ds.pixel_array
    if frames > 1:
        arr = arr[frame - 1]
    return np.asarray(apply_modality_lut(arr, ds))


def to_8bit(ds: Dataset, arr: np.ndarray, opts: RenderOptions) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3 and photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        return np.clip(arr, 0, 255).astype(np.uint8)
    center = (
        opts.window_center if opts.window_center is not None else _first(ds.get("WindowCenter"))
    )
    width = opts.window_width if opts.window_width is not None else _first(ds.get("WindowWidth"))
    data = arr.astype(np.float64)
    if center is None or width is None or width <= 0:
        lo, hi = float(np.percentile(data, 0.5)), float(np.percentile(data, 99.5))
        if hi <= lo:
            hi = lo + 1
    else:
        lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    out = np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return out.astype(np.uint8)


def render(ds: Dataset, frame: int, opts: RenderOptions) -> bytes:
    img = Image.fromarray(to_8bit(ds, frame_array(ds, frame), opts))
    if opts.viewport:
        img.thumbnail(opts.viewport, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if MEDIA_TYPES[opts.media_type] == "JPEG":
        img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(
            buf, "JPEG", quality=opts.quality
        )
    else:
        img.save(buf, "PNG", optimize=False)
    return buf.getvalue()
