"""Stream a multipart/form-data upload to files on disk, with a byte limit on the body.

Starlette's form parser keeps no limit on file parts and spools them under the system temp
dir; an upload then sits in memory (``await file.read()``) before it is checked. Here the body
is counted as it arrives, so the limit holds without a Content-Length header (chunked
transfer), and file parts go straight to ``*.part`` files under the node's temp dir (removed
when the request ends, and by the start-up sweep after a crash).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from pair.core.errors import BadRequest, LimitExceeded, UnsupportedMediaType
from pair.repository.multipart import parse_media_type


class _Sink:
    """python-multipart callbacks: file parts of ``field`` each into their own temp file."""

    def __init__(self, tmp_dir: Path, field: str) -> None:
        self.tmp_dir = tmp_dir
        self.field = field
        self.files: list[tuple[str, Path]] = []
        self.paths: list[Path] = []
        self._fh: BinaryIO | None = None
        self._headers: dict[str, bytes] = {}
        self._name = b""
        self._value = b""
        self._open_part = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, b"", b""
        self._open_part = True

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._name.decode("latin-1").lower()] = self._value
        self._name, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        if params.get(b"name", b"").decode("latin-1") != self.field or b"filename" not in params:
            return  # another field: its bytes are dropped
        filename = params[b"filename"].decode("utf-8", "replace") or f"file{len(self.files) + 1}"
        path = self.tmp_dir / f"upload-{secrets.token_hex(8)}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.paths.append(path)
        self._fh = os.fdopen(fd, "wb")
        self.files.append((filename, path))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._fh is not None:
            self._fh.write(data[start:end])

    def _part_end(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._open_part = False

    def check_complete(self) -> None:
        if self._open_part:
            raise BadRequest("The multipart/form-data body ends inside a part.")

    def remove(self) -> None:
        if self._fh is not None:
            self._fh.close()
        for path in self.paths:
            with suppress(OSError):
                path.unlink()


@asynccontextmanager
async def receive_files(
    request: Request, tmp_dir: Path, limit: int, field: str = "files"
) -> AsyncIterator[list[tuple[str, Path]]]:
    """(file name, temp path) of every file part of ``field``; the files are removed on exit.

    ``LimitExceeded`` (413) once the body passes ``limit`` bytes, whether or not a
    Content-Length was sent; 415 for a body that is not multipart/form-data."""
    mt = parse_media_type(request.headers.get("content-type", ""))
    if mt.type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Send the files as multipart/form-data in the {field!r} field, not {mt.type!r}."
        )
    boundary = mt.params.get("boundary")
    if not boundary:
        raise BadRequest("multipart/form-data Content-Type lacks a boundary parameter.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, int(declared))
    tmp_dir.mkdir(parents=True, exist_ok=True)
    sink = _Sink(tmp_dir, field)
    parser = MultipartParser(boundary, callbacks=sink.callbacks())  # type: ignore[arg-type]
    try:
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise BadRequest(f"Malformed multipart/form-data body: {exc}.") from None
        except ClientDisconnect:
            raise BadRequest("The client disconnected before the upload was complete.") from None
        sink.check_complete()
        yield sink.files
    finally:
        sink.remove()


def _too_large(limit: int, declared: int | None = None) -> LimitExceeded:
    size = f"of {declared} bytes " if declared is not None else ""
    return LimitExceeded(
        f"The upload {size}exceeds the limit of {limit} bytes (PAIR_MAX_UPLOAD_BYTES).",
        details={"limit": "max_upload_bytes", "bytes": limit},
    )
