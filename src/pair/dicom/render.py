"""Render frames to 8-bit PNG/JPEG with window/level (WADO-RS ``/rendered``)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from pair.core.errors import (
    BadRequest,
    Invalid,
    NotAcceptable,
    NotFound,
    PairError,
    PixelDataUnreadable,
)

log = logging.getLogger("pair.dicom")

MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}
# PS3.18 ``window=center,width,function`` names -> PS3.3 VOI LUT Function (0028,1056) terms
WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/png"
    window_center: float | None = None
    window_width: float | None = None
    window_function: str | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90

    @classmethod
    def from_query(
        cls, accept: str, window: str | None, viewport: str | None, quality: int | None
    ) -> RenderOptions:
        media = _media_type(accept)
        center = width = function = None
        if window:
            bits = [b.strip() for b in window.split(",")]
            try:
                center, width = float(bits[0]), float(bits[1])
            except (ValueError, IndexError):
                raise BadRequest("window must be 'center,width[,function]'.") from None
            if len(bits) > 3:
                raise BadRequest("window must be 'center,width[,function]'.")
            name = bits[2].lower() if len(bits) == 3 else "linear"
            if name not in WINDOW_FUNCTIONS:
                raise BadRequest(
                    f"window function {bits[2]!r} is not one of {', '.join(WINDOW_FUNCTIONS)}."
                )
            function = WINDOW_FUNCTIONS[name]
            if function == "LINEAR" and width < 1:
                raise BadRequest("window width must be at least 1 for the linear function.")
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
        return cls(media, center, width, function, vp, q)


def _media_type(accept: str) -> str:
    """PNG unless JPEG is asked for first; 406 when only other types are acceptable."""
    kinds = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    kinds = [k for k in kinds if k]
    for kind in kinds:
        if kind in MEDIA_TYPES:
            return kind
        if kind in ("*/*", "image/*"):
            return "image/png"
    if kinds:
        raise NotAcceptable(
            f"Rendered images are available as {' or '.join(MEDIA_TYPES)}, not {accept!r}."
        )
    return "image/png"


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or value.__class__.__name__ == "MultiValue":
        value = value[0]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def frame_bytes(ds: Dataset) -> int:
    """Bytes one frame of ``ds`` decodes to (Rows x Columns x samples x bytes per sample)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        raise Invalid("Pixel Data without a valid Rows, Columns or Bits Allocated.") from None
    return rows * cols * samples * max(1, (bits + 7) // 8)


def check_decoded(ds: Dataset, frames: int, limit: int) -> None:
    """422 unless ``frames`` frames of ``ds`` decode to at most ``limit`` bytes."""
    size = frame_bytes(ds) * frames
    if size > limit:
        what = "A frame" if frames == 1 else f"{frames} frames"
        raise Invalid(
            f"{what} of this instance decode to {size} bytes; the limit is "
            f"PAIR_MAX_DECODED_PIXEL_BYTES={limit}.",
            details={"limit": "max_decoded_pixel_bytes", "bytes": limit},
        )


def frame_array(ds: Dataset, frame: int = 1, max_decoded_bytes: int | None = None) -> np.ndarray:
    """One frame (1-based) after the modality LUT (HU for CT).

    Only that frame is decoded, and only if it fits ``max_decoded_bytes``
    (``PAIR_MAX_DECODED_PIXEL_BYTES``; 422 past it): a small file can claim a huge image."""
    if "PixelData" not in ds:
        raise NotFound("This instance has no pixel data to render.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= frames:
        raise NotFound(f"Frame {frame} does not exist; the instance has {frames} frame(s).")
    if max_decoded_bytes is not None:
        check_decoded(ds, 1, max_decoded_bytes)
    ds.pixel_array_options(index=frame - 1)
    return np.asarray(apply_modality_lut(ds.pixel_array, ds))


def voi(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 window functions, scaled to [0, 1] (ymin = 0, ymax = 1)."""
    if function == "SIGMOID":
        return np.asarray(1.0 / (1.0 + np.exp(-4.0 * (x - center) / width)))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:  # the linear function's lower limit: a threshold at c - 0.5
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _voi_lut(ds: Dataset, x: np.ndarray) -> np.ndarray:
    """The first VOI LUT Sequence item (PS3.3 C.11.2.1.1), scaled to [0, 1]."""
    item = ds.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    table = np.asarray(apply_voi_lut(np.arange(entries) + first, ds, prefer_lut=True))
    index = np.clip(np.rint(x).astype(np.int64) - first, 0, len(table) - 1)
    top = max(float(2**bits - 1), float(table.max()), 1.0)
    return np.asarray(table[index] / top)


def to_8bit(ds: Dataset, arr: np.ndarray, opts: RenderOptions) -> np.ndarray:
    """Apply the VOI transformation and, for MONOCHROME1, invert (darker is higher).

    The window in the request wins; otherwise the header's first window (with its VOI LUT
    Function), then its VOI LUT Sequence, then the 0.5-99.5 percentile range of the frame.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3 and photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        return np.clip(arr, 0, 255).astype(np.uint8)
    data = arr.astype(np.float64)
    if opts.window_center is not None and opts.window_width is not None:
        out = voi(data, opts.window_center, opts.window_width, opts.window_function or "LINEAR")
    elif (width := _first(ds.get("WindowWidth"))) and width > 0 and "WindowCenter" in ds:
        function = str(ds.get("VOILUTFunction", "") or "LINEAR").upper()
        if function not in WINDOW_FUNCTIONS.values() or (function == "LINEAR" and width < 1):
            function = "LINEAR_EXACT"  # an out-of-range header value: the closest defined one
        out = voi(data, _first(ds.WindowCenter) or 0.0, width, function)
    elif "VOILUTSequence" in ds and ds.VOILUTSequence:
        out = _voi_lut(ds, data)
    else:
        lo, hi = float(np.percentile(data, 0.5)), float(np.percentile(data, 99.5))
        if hi <= lo:
            hi = lo + 1
        out = np.clip((data - lo) / (hi - lo), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return np.rint(out * 255.0).astype(np.uint8)


@contextmanager
def pixel_errors(what: str) -> Iterator[None]:
    """Pixel data that cannot be decoded or rendered is the instance's problem, not the
    server's: a 422 ``pixel_data_unreadable`` naming the decoder's complaint, never a 500."""
    try:
        yield
    except PairError:
        raise
    except Exception as exc:  # decoders and LUT code raise anything from ValueError to OSError
        log.warning("%s: pixel data unreadable (%s)", what, type(exc).__name__)
        first_line = str(exc).strip().splitlines()[0][:200].rstrip(":") if str(exc).strip() else ""
        raise PixelDataUnreadable(
            f"The pixel data of this instance cannot be {what}: {type(exc).__name__}"
            + (f": {first_line}" if first_line else "")
            + ". Its metadata and the stored file remain available."
        ) from None


def render(
    ds: Dataset, frame: int, opts: RenderOptions, max_decoded_bytes: int | None = None
) -> bytes:
    """PNG/JPEG bytes of one frame (the only one decoded)."""
    with pixel_errors("rendered"):
        img = Image.fromarray(to_8bit(ds, frame_array(ds, frame, max_decoded_bytes), opts))
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
