"""Decompression bombs for the limit tests, written in 1 MiB pieces (never held whole).

Zeros deflate about 1000:1, so a few hundred KiB on the wire claim hundreds of MiB once
inflated: what the audit used against STOW-RS, the portal upload and ``pair import``.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from pair.dicom.deflate import split_meta
from tests.factories import ct_instance

STEP = 1 << 20
ZEROS = bytes(STEP)


def _zeros(n: int) -> Iterator[bytes]:
    while n > 0:
        yield ZEROS[: min(n, STEP)]
        n -= STEP


def deflated_instance(side: int, *, study_uid: str | None = None) -> bytes:
    """A Part 10 CT instance in the Deflated transfer syntax whose zero Pixel Data
    (``side`` x ``side``, 16 bits) inflates to ``2 * side**2`` bytes."""
    ds = ct_instance(study_uid=study_uid or generate_uid(), series_uid=generate_uid(), size=1)
    ds.Rows = ds.Columns = side
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    small = buf.getvalue()
    found = split_meta(small)
    assert found is not None
    offset = found[0]
    header = zlib.decompress(small[offset:], -zlib.MAX_WBITS)
    length = 2 * side * side
    pixel_head = b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little")
    out = bytearray(small[:offset])
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out += packer.compress(header + pixel_head)
    for piece in _zeros(length):
        out += packer.compress(piece)
    out += packer.flush()
    return bytes(out)


def zip_with_zero_member(path: Path, size: int, *, name: str = "bomb.dcm") -> Path:
    """A zip whose one member is ``size`` zero bytes."""
    return zip_with_members(path, 1, size, name=name)


def zip_with_members(path: Path, count: int, size: int = 0, name: str = "") -> Path:
    """A zip of ``count`` members of ``size`` zero bytes each."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for n in range(count):
            with zf.open(name or f"m{n:06d}.dcm", "w", force_zip64=size > 2**30) as fh:
                for piece in _zeros(size):
                    fh.write(piece)
    return path


def chunked(size: int, head: bytes = b"", tail: bytes = b"") -> Iterator[bytes]:
    """A request body sent without a Content-Length (chunked transfer encoding)."""
    yield head
    yield from _zeros(size)
    yield tail


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a live process in bytes (``VmHWM`` in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")
