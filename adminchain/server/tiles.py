"""C2SP tlog-tiles on the server: ``/checkpoint``, ``/tile/<L>/<N>[.p/<W>]`` and
``/tile/entries/<N>[.p/<W>]`` (SPEC-server §7.1, §9), read from the tree the ledger stores.

Roles as ``/v1/checkpoint``: auditor, or anyone with ``--public-audit``. Caching as tlog-tiles
asks: a full tile or bundle never changes (a year, ``immutable``); a partial one and the
checkpoint only for a few seconds. ``public`` (shared caches may keep them) with
``--public-audit``, else ``private`` (the request carried a token). Entry bundles are gzip'd
when the client accepts it.
"""

from __future__ import annotations

import gzip
from typing import Any, Final

from litestar import Request, Response

from adminchain.server.app import AUDIT_PUBLIC, get, server_of
from adminchain.server.problems import ProblemError
from ledger.tiles import EntryTooLargeError, parse_tile_path, read_tile

__all__ = ["FULL_CACHE", "SHORT_CACHE", "TILE_ROUTES"]

FULL_CACHE: Final = "max-age=31536000, immutable"
SHORT_CACHE: Final = "max-age=5"
OCTETS: Final = "application/octet-stream"


def _cache(request: Request[Any, Any, Any], policy: str) -> str:
    scope = "public" if server_of(request).config.public_audit else "private"
    return f"{scope}, {policy}"


@get(
    "/checkpoint",
    guards=[AUDIT_PUBLIC],
    summary="The latest published checkpoint (C2SP tlog-tiles)",
    media_type="text/plain",
)
async def tlog_checkpoint(request: Request[Any, Any, Any]) -> Response[str]:
    """The newest signed checkpoint the ledger stores (the newest at all if none is signed)."""
    server = server_of(request)
    notes = await server.run(server.ledger.checkpoints)
    if not notes:
        raise ProblemError(
            404,
            "no checkpoint published yet (serve with --checkpoint-key, or run "
            "`adminchain checkpoint --key …`)",
        )
    signed = [note for _, note in notes if "\n\n" in note]  # tlog-tiles: signed if any is
    return Response(
        signed[-1] if signed else notes[-1][1],
        media_type="text/plain",
        headers={"Cache-Control": _cache(request, SHORT_CACHE)},
    )


@get(
    "/tile/{rest:path}",
    guards=[AUDIT_PUBLIC],
    summary="A Merkle tree tile or an entry bundle (C2SP tlog-tiles)",
    media_type=OCTETS,
)
async def tlog_tile(request: Request[Any, Any, Any], rest: str) -> Response[bytes]:
    server = server_of(request)
    tile = parse_tile_path("tile" + rest)
    ledger = server.ledger

    def read() -> bytes:
        return read_tile(ledger.backend.read_nodes(), ledger.read_stored, tile, ledger.size())

    try:
        data: bytes = await server.run(read)
    except EntryTooLargeError as e:
        raise ProblemError(500, str(e), kind="entry-too-large") from e
    headers = {"Cache-Control": _cache(request, SHORT_CACHE if tile.partial else FULL_CACHE)}
    if tile.level is None:
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("accept-encoding", ""):
            data = gzip.compress(data, 6)
            headers["Content-Encoding"] = "gzip"
    return Response(data, media_type=OCTETS, headers=headers)


TILE_ROUTES: Final = (tlog_checkpoint, tlog_tile)
"""The handlers `create_app` includes (`ServerConfig.extra_routes`)."""
