"""One error hierarchy, mapped to HTTP status codes and CLI exit codes in one place."""

from __future__ import annotations

from typing import Any


class PairError(Exception):
    """Base of every expected error. ``message`` says what was wrong and what is allowed."""

    http_status = 400
    exit_code = 1
    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class Invalid(PairError):
    http_status = 422
    exit_code = 2
    code = "invalid"


class BadRequest(PairError):
    http_status = 400
    exit_code = 2
    code = "bad_request"


class Unauthorized(PairError):
    http_status = 401
    exit_code = 3
    code = "unauthorized"


class Forbidden(PairError):
    http_status = 403
    exit_code = 3
    code = "forbidden"


class NotFound(PairError):
    http_status = 404
    exit_code = 4
    code = "not_found"


class Conflict(PairError):
    http_status = 409
    exit_code = 5
    code = "conflict"


class TooManyRequests(PairError):
    """Refused for now (sign-in throttling); ``retry_after`` seconds until a retry may work."""

    http_status = 429
    exit_code = 7
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, int(retry_after))


class PayloadTooLarge(PairError):
    http_status = 413
    exit_code = 2
    code = "payload_too_large"


class LimitExceeded(PayloadTooLarge):
    """A size limit of the node was reached (a decompression bomb, an oversized upload); the
    message names the limit and its ``PAIR_*`` setting."""

    code = "limit_exceeded"


class UnsupportedMediaType(PairError):
    http_status = 415
    exit_code = 2
    code = "unsupported_media_type"


class NotAcceptable(PairError):
    http_status = 406
    exit_code = 2
    code = "not_acceptable"


class PixelDataUnreadable(PairError):
    """A stored instance whose pixel data cannot be decoded or rendered: its metadata and
    Part 10 file are still served, its frames and renderings answer this (422)."""

    http_status = 422
    exit_code = 2
    code = "pixel_data_unreadable"
