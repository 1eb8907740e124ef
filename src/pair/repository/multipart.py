"""multipart/related parsing and streaming (PS3.18 §8.6/§8.7 payloads)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pair.core.errors import BadRequest, UnsupportedMediaType


@dataclass(frozen=True)
class MediaType:
    type: str
    params: dict[str, str]


def parse_media_type(value: str) -> MediaType:
    parts = [p.strip() for p in (value or "").split(";")]
    params: dict[str, str] = {}
    for p in parts[1:]:
        if "=" in p:
            k, _, v = p.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
    return MediaType(parts[0].lower(), params)


def split_related(body: bytes, content_type: str, expected_type: str) -> list[tuple[str, bytes]]:
    """Split a multipart/related body into (part content type, bytes)."""
    mt = parse_media_type(content_type)
    if mt.type != "multipart/related":
        raise UnsupportedMediaType(
            f'Content-Type must be multipart/related; type="{expected_type}", got {mt.type!r}.'
        )
    declared = mt.params.get("type", expected_type).lower()
    if declared != expected_type:
        raise UnsupportedMediaType(
            f"multipart/related type {declared!r} is not supported; use {expected_type!r}."
        )
    boundary = mt.params.get("boundary")
    if not boundary:
        raise BadRequest("multipart/related Content-Type lacks a boundary parameter.")
    delim = b"--" + boundary.encode("latin-1")
    chunks = body.split(delim)
    if len(chunks) < 3:
        raise BadRequest("multipart body has no parts (boundary not found).")
    parts: list[tuple[str, bytes]] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise BadRequest("multipart part without a header/body separator.")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        ctype = declared
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-type":
                ctype = parse_media_type(value.strip()).type
        if ctype != expected_type:
            raise UnsupportedMediaType(
                f"Part with Content-Type {ctype!r} is not supported; use {expected_type!r}."
            )
        parts.append((ctype, payload))
    if not parts:
        raise BadRequest("multipart body contains no parts.")
    return parts


def new_boundary() -> str:
    return "pair-" + secrets.token_hex(12)


def stream_related(parts: Iterable[tuple[bytes, str]], boundary: str) -> Iterator[bytes]:
    """Yield a multipart/related body part by part (so large studies stream)."""
    delim = f"--{boundary}\r\n".encode()
    for payload, ctype in parts:
        yield delim + f"Content-Type: {ctype}\r\n\r\n".encode()
        yield payload
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
