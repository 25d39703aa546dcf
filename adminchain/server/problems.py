"""RFC 9457 problem documents: every error the server answers is one (SPEC-server §7.1).

Library errors map to statuses here and nowhere else: bad input 400 (with `line` and `field`),
unknown things 404, strict refusals 409, a ledger that cannot commit 503 with `Retry-After`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from ledger.errors import (
    InvalidEventError,
    LedgerError,
    NotFoundError,
    ProofError,
    StorageError,
    StrictRefusedError,
    UsageError,
)

__all__ = ["PROBLEM_TYPE", "Problem", "ProblemError", "exception_handlers"]

PROBLEM_TYPE: Final = "application/problem+json"
RETRY_AFTER_SECONDS: Final = 1

_TITLES: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    line: int | None = None
    field: str | None = None
    projection: str | None = None


class ProblemError(Exception):
    """Answer with a problem document (raised by handlers and guards)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        line: int | None = None,
        field: str | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.line = line
        self.field = field
        self.kind = kind


def _slug(status: int, kind: str | None) -> str:
    name = kind or _TITLES.get(status, "error").lower().replace(" ", "-")
    return f"https://adminchain.dev/problems/{name}"


def problem_response(
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    line: int | None = None,
    field: str | None = None,
    kind: str | None = None,
) -> Response[Problem]:
    """The response carrying one problem document."""
    body = Problem(
        type=_slug(status, kind),
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        line=line,
        field=field,
    )
    return Response(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def from_ledger_error(error: LedgerError) -> ProblemError:
    """The problem a library error is to a client."""
    if isinstance(error, InvalidEventError):
        return ProblemError(
            400, str(error), line=error.line, field=error.field, kind="invalid-event"
        )
    if isinstance(error, StrictRefusedError):
        return ProblemError(409, str(error), line=error.line, kind="strict-refused")
    if isinstance(error, NotFoundError):
        return ProblemError(404, str(error))
    if isinstance(error, UsageError | ProofError):
        return ProblemError(400, str(error))
    if isinstance(error, StorageError):
        return ProblemError(
            503,
            f"the ledger cannot commit: {error}; nothing was stored",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            kind="storage-unavailable",
        )
    return ProblemError(500, str(error))


def _problem(_: Request[Any, Any, Any], exc: ProblemError) -> Response[Problem]:
    return problem_response(
        exc.status, exc.detail, headers=exc.headers, line=exc.line, field=exc.field, kind=exc.kind
    )


def _ledger(request: Request[Any, Any, Any], exc: LedgerError) -> Response[Problem]:
    return _problem(request, from_ledger_error(exc))


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    detail = exc.detail or _TITLES.get(exc.status_code, "error")
    extra = getattr(exc, "extra", None)
    if exc.status_code == 400 and extra:
        detail = f"{detail}: {extra}"
    headers = dict(exc.headers or {})
    return problem_response(exc.status_code, str(detail), headers=headers)


def _timeout(_: Request[Any, Any, Any], exc: TimeoutError) -> Response[Problem]:
    return problem_response(504, str(exc) or "the request timed out")


exception_handlers: Final[dict[Any, Any]] = {
    ProblemError: _problem,
    LedgerError: _ledger,
    HTTPException: _http,
    TimeoutError: _timeout,
}
