"""WADO-RS helpers: find stored files, negotiate transfer syntax, frames, metadata."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian
from sqlalchemy.orm import Session

from pair.core.errors import BadRequest, Invalid, NotAcceptable, NotFound, PixelDataUnreadable
from pair.core.node import Node
from pair.dicom.jsonmodel import dataset_json, element_json
from pair.dicom.parse import to_part10_bytes
from pair.dicom.render import check_decoded, pixel_errors
from pair.repository.ingest import content_store
from pair.repository.models import Instance
from pair.repository.multipart import parse_media_type
from pair.repository.query import instances_for

log = logging.getLogger("pair.repository")

COMPRESSED_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}


def require_instances(
    session: Session,
    facility_id: int,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> list[Instance]:
    rows = instances_for(session, facility_id, study, series, instance)
    if not rows:
        what = "instance" if instance else "series" if series else "study"
        raise NotFound(f"No such {what} in this facility's repository.")
    return rows


def file_path(node: Node, row: Instance) -> Path:
    return content_store(node).path(row.storage_path)


@lru_cache(maxsize=4096)
def _header(path: str) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def read_header(node: Node, row: Instance) -> Dataset:
    """Header without pixel data, cached: files are content-addressed, hence immutable."""
    return _header(str(file_path(node, row)))


def read_dataset(node: Node, row: Instance) -> Dataset:
    return pydicom.dcmread(file_path(node, row))


def negotiate_dicom(accept: str) -> str | None:
    """Return the transfer syntax to send, or None for 'as stored'; 406 if unsatisfiable."""
    if not accept.strip():
        return None
    for item in accept.split(","):
        mt = parse_media_type(item)
        if mt.type in ("*/*", "multipart/*"):
            return None
        if mt.type == "multipart/related":
            inner = mt.params.get("type", "application/dicom").lower()
            if inner not in ("application/dicom", "*/*"):
                continue
            ts = mt.params.get("transfer-syntax", "*")
            return None if ts == "*" else ts
        if mt.type == "application/dicom":
            ts = mt.params.get("transfer-syntax", "*")
            return None if ts == "*" else ts
    raise NotAcceptable(
        'Only multipart/related; type="application/dicom" is offered for this resource.'
    )


def iter_part10(
    node: Node, rows: list[Instance], target_ts: str | None
) -> Iterator[tuple[bytes, str]]:
    """Part 10 bytes of ``rows``; an unsatisfiable transfer syntax raises 406 here, before the
    response (and its 200 status) starts streaming."""
    if target_ts is not None:
        _check_transcodable(rows, target_ts)
        _check_decodable(rows, target_ts, node.settings.max_decoded_pixel_bytes)
    return _part10(node, rows, target_ts)


def _check_decodable(rows: list[Instance], target_ts: str, limit: int) -> None:
    """422 before streaming starts when transcoding an instance would decode more pixel bytes
    than ``PAIR_MAX_DECODED_PIXEL_BYTES`` (all its frames are decoded at once)."""
    for row in rows:
        if target_ts == row.transfer_syntax_uid or not UID(row.transfer_syntax_uid).is_compressed:
            continue
        size = (row.rows or 0) * (row.columns or 0) * max(1, ((row.bits_allocated or 8) + 7) // 8)
        size *= 3 * (row.number_of_frames or 1)  # up to three samples per pixel
        if size > limit:
            raise Invalid(
                f"Instance {row.sop_instance_uid} decodes to about {size} bytes; the limit is "
                f"PAIR_MAX_DECODED_PIXEL_BYTES={limit}. Ask for transfer-syntax=* (as stored).",
                details={"limit": "max_decoded_pixel_bytes", "bytes": limit},
            )


def _part10(node: Node, rows: list[Instance], target_ts: str | None) -> Iterator[tuple[bytes, str]]:
    store = content_store(node)
    for row in rows:
        data = store.read(row.storage_path)
        if target_ts is not None and target_ts != row.transfer_syntax_uid:
            ds = pydicom.dcmread(io.BytesIO(data))
            ds.decompress()
            data = to_part10_bytes(ds, ExplicitVRLittleEndian)
        ctype = "application/dicom"
        if target_ts:
            ctype += f"; transfer-syntax={target_ts}"
        yield data, ctype


def _check_transcodable(rows: list[Instance], target_ts: str) -> None:
    for row in rows:
        if target_ts != row.transfer_syntax_uid and target_ts != ExplicitVRLittleEndian:
            raise NotAcceptable(
                f"Transfer syntax {target_ts} is not available; use transfer-syntax=* "
                f"(as stored) or {ExplicitVRLittleEndian}."
            )


def metadata(node: Node, rows: list[Instance], base: str) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        ds = read_header(node, row)
        study = str(ds.StudyInstanceUID)
        series = str(ds.SeriesInstanceUID)
        prefix = (
            f"{base}/studies/{study}/series/{series}/instances/{row.sop_instance_uid}/bulkdata/"
        )
        item = _instance_json(ds, prefix)
        if row.rows:
            item["7FE00010"] = {
                "vr": "OB" if UID(row.transfer_syntax_uid).is_compressed else "OW",
                "BulkDataURI": prefix + "7FE00010",
            }
        out.append(item)
    return out


def _instance_json(ds: Dataset, prefix: str) -> dict[str, Any]:
    """The instance's DICOM JSON; if one element cannot be encoded (a file stored before the
    ingest well-formedness checks), every other element is still served and that one is
    given with its VR only, so one bad element never fails the study's metadata."""
    try:
        return dataset_json(ds, bulk_uri=lambda tag: prefix + tag)
    except Exception:
        log.warning("metadata of %s: falling back to per-element encoding", prefix)
    out: dict[str, Any] = {}
    for elem in _top_level(ds):
        out[f"{int(elem.tag):08X}"] = element_json(elem, lambda tag: prefix + tag)
    return out


def _top_level(ds: Dataset) -> Iterator[Any]:
    for tag in list(ds._dict):
        try:
            yield ds[tag]
        except Exception:
            raw = ds._dict[tag]
            yield _Unreadable(tag, str(getattr(raw, "VR", None) or "UN"))


class _Unreadable:
    """An element pydicom cannot decode: served as its VR only."""

    def __init__(self, tag: int, vr: str) -> None:
        self.tag, self.VR = tag, vr


def bulkdata(node: Node, row: Instance, tag: str) -> bytes:
    try:
        tag_int = int(tag, 16)
    except ValueError:
        raise BadRequest("Bulk data tag must be 8 hex digits.") from None
    ds = read_dataset(node, row)
    if tag_int not in ds:
        raise NotFound(f"The instance has no element {tag}.")
    value = ds[tag_int].value
    if not isinstance(value, bytes | bytearray):
        raise NotFound(f"Element {tag} is not bulk data.")
    return bytes(value)


def parse_frame_list(frames: str) -> list[int]:
    try:
        numbers = [int(f) for f in frames.split(",") if f.strip()]
    except ValueError:
        raise BadRequest("Frame list must be comma-separated positive integers.") from None
    if not numbers or any(n < 1 for n in numbers):
        raise BadRequest("Frame numbers start at 1.")
    return numbers


EXPLICIT_LE = "1.2.840.10008.1.2.1"


def frames(node: Node, row: Instance, numbers: list[int], accept: str) -> list[tuple[bytes, str]]:
    """Frame parts as asked: the stored encoding, or decoded (Explicit VR Little Endian).

    ``transfer-syntax=*`` (what OHIF asks for) lets the node send the frames as stored, with
    the actual transfer syntax on each part; a named syntax must be the stored one or Explicit
    VR Little Endian, anything else is a 406 that names what is offered (PS3.18 8.7.3).
    """
    ds = read_dataset(node, row)
    if "PixelData" not in ds:
        raise NotFound("This instance has no pixel data.")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFound(f"Frame(s) {missing} do not exist; the instance has {count} frame(s).")
    ts = UID(row.transfer_syntax_uid)
    wanted = _frame_media_types(accept)
    types = {media for media, _ in wanted}
    native = COMPRESSED_MEDIA.get(str(ts)) if ts.is_compressed else None
    as_stored = ts.is_compressed and any(
        syntax in ("*", str(ts)) and media in (native, "application/octet-stream", "*/*")
        for media, syntax in wanted
    )
    if as_stored or (native is not None and (native, None) in wanted):
        with pixel_errors("decoded"):
            encoded = list(generate_frames(ds.PixelData, number_of_frames=count))
        if len(encoded) < max(numbers):
            raise PixelDataUnreadable(
                f"The pixel data holds {len(encoded)} encoded frame(s), not {count}."
            )
        media = native if native is not None and native in types else "application/octet-stream"
        return [(encoded[n - 1], f"{media}; transfer-syntax={ts}") for n in numbers]
    decoded_ok = {None, "*", EXPLICIT_LE} | ({str(ts)} if not ts.is_compressed else set())
    if wanted and not any(
        media in ("application/octet-stream", "*/*", "multipart/*") and syntax in decoded_ok
        for media, syntax in wanted
    ):
        offered = ", ".join(
            filter(
                None,
                [
                    f"application/octet-stream (transfer-syntax {EXPLICIT_LE})",
                    f"{native or 'application/octet-stream'} (transfer-syntax {ts})"
                    if ts.is_compressed
                    else None,
                ],
            )
        )
        raise NotAcceptable(f"Frames of this instance are offered as {offered} only.")
    label = "application/octet-stream"
    if any(syntax is not None for _, syntax in wanted):  # the client named one: say which
        label += f"; transfer-syntax={EXPLICIT_LE}"
    check_decoded(ds, len(numbers), node.settings.max_decoded_pixel_bytes)
    out = []
    for n in numbers:  # only the frames asked for are decoded
        ds.pixel_array_options(index=n - 1)
        with pixel_errors("decoded"):
            data = np.ascontiguousarray(ds.pixel_array).tobytes()
        out.append((data, label))
    return out


def _frame_media_types(accept: str) -> set[tuple[str, str | None]]:
    """(media type, transfer-syntax) pairs an Accept asks for; multipart/related's ``type``."""
    wanted: set[tuple[str, str | None]] = set()
    for item in filter(str.strip, accept.split(",")):
        mt = parse_media_type(item)
        syntax = mt.params.get("transfer-syntax")
        if mt.type == "multipart/related":
            wanted.add((mt.params.get("type", "application/octet-stream").lower(), syntax))
        else:
            wanted.add((mt.type, syntax))
    return wanted
