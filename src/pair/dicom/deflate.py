"""Bounded measurement of Deflated Explicit VR Little Endian data sets (decompression bombs).

pydicom inflates a deflated data set in one ``zlib.decompress`` call: 128 KiB can become
128 MiB in memory before anything is validated. ``inflated_size`` inflates in ``STEP``-sized
pieces (``decompressobj.decompress(..., max_length)``), keeps none of the output and stops as
soon as the limit is passed, so only data sets known to fit are handed to pydicom.
"""

from __future__ import annotations

import zlib

from pair.core.errors import LimitExceeded

DEFLATED = "1.2.840.10008.1.2.1.99"
STEP = 1 << 20
# explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = {
    *(b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ"),
    *(b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"),
}


def split_meta(data: bytes) -> tuple[int, str] | None:
    """Where the data set starts after the file meta group, and the meta's transfer syntax;
    None without a file meta group (then nothing here is deflated)."""
    if data[128:132] == b"DICM":
        pos = 132
    elif data[:2] == b"\x02\x00":  # the meta group without the preamble (some clients)
        pos = 0
    else:
        return None
    syntax = ""
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        element = int.from_bytes(data[pos + 2 : pos + 4], "little")
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            head, length = 12, int.from_bytes(data[pos + 8 : pos + 12], "little")
        elif vr.isalpha() and vr.isupper():
            head, length = 8, int.from_bytes(data[pos + 6 : pos + 8], "little")
        else:  # implicit VR file meta (not conformant, but read by pydicom)
            head, length = 8, int.from_bytes(data[pos + 4 : pos + 8], "little")
        if element == 0x0010:
            value = data[pos + head : pos + head + length]
            syntax = value.rstrip(b"\x00 ").decode("ascii", "replace")
        pos += head + length
    return pos, syntax


def is_deflated(data: bytes) -> bool:
    found = split_meta(data)
    return found is not None and found[1] == DEFLATED


def inflated_size(data: bytes, limit: int, what: str = "the instance") -> int:
    """Size of the Part 10 bytes once the data set is inflated (``len(data)`` unless the
    transfer syntax is deflated). Raises ``LimitExceeded`` as soon as it passes ``limit``,
    having held at most ``STEP`` inflated bytes at a time. A truncated or damaged stream is
    measured as far as it goes: pydicom reports it when the instance is read."""
    found = split_meta(data)
    if found is None or found[1] != DEFLATED:
        return len(data)
    offset = found[0]
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size, pos, tail = offset, offset, b""
    try:
        while not inflater.eof:
            if tail:
                chunk = tail
            elif pos < len(data):
                chunk, pos = data[pos : pos + STEP], pos + STEP
            else:
                break
            size += len(inflater.decompress(chunk, STEP))
            if size > limit:
                raise LimitExceeded(  # the setting first: C-STORE keeps 64 characters
                    f"Inflated size over PAIR_MAX_INFLATED_INSTANCE_BYTES={limit}: {what} is "
                    "a Deflated transfer syntax data set that inflates past the limit.",
                    details={"limit": "max_inflated_instance_bytes", "bytes": limit},
                )
            tail = inflater.unconsumed_tail
    except zlib.error:
        return size  # damaged: pydicom's own error names it
    return size
