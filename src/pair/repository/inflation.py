"""Limits on what compressed input may inflate to: zip archives and deflated data sets.

Every door that decompresses (STOW-RS, portal upload, ``pair import``) measures before it
holds: a zip's member count and central directory are checked from its end record before
``zipfile`` parses them, every member's declared size (an upper bound: ``zipfile`` stops at
it) against the per-instance limit, the declared total against the request's budget, and
members are read in pieces with a running cap. Settings: ``PAIR_MAX_INFLATED_INSTANCE_BYTES``,
``PAIR_MAX_INFLATED_REQUEST_BYTES``, ``PAIR_MAX_ZIP_MEMBERS``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pair.core.config import Settings
from pair.core.errors import BadRequest, LimitExceeded
from pair.dicom.deflate import inflated_size, is_deflated

READ_STEP = 1 << 20
# a central directory entry is 46 bytes plus its name, extra field and comment
CD_BYTES_PER_MEMBER = 1024
_EOCD, _ZIP64_LOCATOR, _ZIP64_EOCD = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"


@dataclass
class InflationBudget:
    """Inflated bytes one request, upload or import may produce in all."""

    instance_limit: int
    request_limit: int
    member_limit: int
    used: int = 0

    @classmethod
    def of(cls, settings: Settings) -> InflationBudget:
        return cls(
            settings.max_inflated_instance_bytes,
            settings.max_inflated_request_bytes,
            settings.max_zip_members,
        )

    def take(self, n: int, what: str) -> None:
        self.used += n
        if self.used > self.request_limit:
            raise LimitExceeded(
                f"{what}: the request inflates to more than {self.request_limit} bytes in all; "
                f"the limit is PAIR_MAX_INFLATED_REQUEST_BYTES={self.request_limit}.",
                details={"limit": "max_inflated_request_bytes", "bytes": self.request_limit},
            )

    def measure(self, payloads: Iterable[tuple[str, bytes]]) -> list[int | None]:
        """Inflated sizes of Part 10 payloads (None: over the per-instance limit, left for
        ingest to reject); deflated data sets count against the request's budget."""
        sizes: list[int | None] = []
        for label, data in payloads:
            if not is_deflated(data):
                sizes.append(len(data))
                continue
            try:
                size = inflated_size(data, self.instance_limit, f"part {label}")
            except LimitExceeded:
                sizes.append(None)
                continue
            self.take(size, f"Part {label}")
            sizes.append(size)
        return sizes


def _end_record(fp: BinaryIO) -> tuple[int, int]:
    """(entries, central directory bytes) from a zip's end record, zip64 included."""
    fp.seek(0, 2)
    size = fp.tell()
    span = min(size, 22 + 0xFFFF)
    fp.seek(size - span)
    tail = fp.read(span)
    at = tail.rfind(_EOCD)
    if at < 0 or span - at < 22:
        raise zipfile.BadZipFile("no end of central directory record")
    entries = int.from_bytes(tail[at + 10 : at + 12], "little")
    cd_bytes = int.from_bytes(tail[at + 12 : at + 16], "little")
    locator = tail[at - 20 : at] if at >= 20 else b""
    if locator[:4] == _ZIP64_LOCATOR:
        fp.seek(int.from_bytes(locator[8:16], "little"))
        record = fp.read(56)
        if record[:4] == _ZIP64_EOCD:
            entries = int.from_bytes(record[32:40], "little")
            cd_bytes = int.from_bytes(record[40:48], "little")
    return entries, cd_bytes


def _wanted(info: zipfile.ZipInfo) -> bool:
    """Instances to ingest: not folders, DICOMDIR, macOS metadata or hidden files."""
    base = info.filename.rsplit("/", 1)[-1]
    return not (
        info.is_dir()
        or base.upper() == "DICOMDIR"
        or "__MACOSX" in info.filename
        or base.startswith(".")
    )


def open_archive(
    path: Path, name: str, budget: InflationBudget
) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """Open a zip and list the members to ingest, refusing a bomb before reading any member.

    Its declared member sizes are charged to ``budget`` (``zipfile`` never yields more)."""
    try:
        with path.open("rb") as fp:
            entries, cd_bytes = _end_record(fp)
        if entries > budget.member_limit or cd_bytes > budget.member_limit * CD_BYTES_PER_MEMBER:
            raise LimitExceeded(
                f"{name}: the zip lists {entries} members ({cd_bytes} bytes of directory); "
                f"the limit is PAIR_MAX_ZIP_MEMBERS={budget.member_limit}.",
                details={"limit": "max_zip_members", "members": budget.member_limit},
            )
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadRequest(f"{name}: not a valid zip archive ({exc}).") from None
    try:
        members = [info for info in zf.infolist() if _wanted(info)]
        for info in members:
            if info.file_size > budget.instance_limit:
                raise _member_too_large(name, info.filename, budget.instance_limit)
        budget.take(sum(info.file_size for info in members), name)
    except BaseException:
        zf.close()
        raise
    return zf, members


def _member_too_large(name: str, member: str, limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"{name}: member {member} inflates to more than {limit} bytes; the limit is "
        f"PAIR_MAX_INFLATED_INSTANCE_BYTES={limit}.",
        details={"limit": "max_inflated_instance_bytes", "bytes": limit},
    )


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limit: int) -> bytes:
    """A member's bytes, read ``READ_STEP`` at a time and never more than ``limit``.

    (``BytesIO.getvalue`` hands its buffer over without a second copy.)"""
    out = io.BytesIO()
    with zf.open(info) as fh:
        while chunk := fh.read(READ_STEP):
            out.write(chunk)
            if out.tell() > limit:
                raise _member_too_large(name, info.filename, limit)
    return out.getvalue()
