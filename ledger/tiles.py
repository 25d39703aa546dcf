"""The Merkle tree as C2SP tlog-tiles (c2sp.org/tlog-tiles): tile paths, tiles, entry bundles.

Pure: nothing here speaks HTTP. A server maps ``GET /tile/...`` onto `parse_tile_path`, then
`read_tile` (the stored tree, SPEC-server §9) and answers with the bytes.

- A tile at level ``L``, index ``N`` holds, for ``i`` in ``0 .. W-1``, the hash
  ``MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L])``: the node at tree level ``8*L``,
  index ``N*256 + i``, which the ledger already stores (`ledger.merkle`: every complete perfect
  subtree). A full tile is 256 hashes (8192 bytes); a partial tile ``.p/W`` its first W.
- An entry bundle ``entries/N`` holds the leaves of tile ``0/N``, each as a big-endian uint16
  length then the leaf: in this ledger a leaf is `ledger.codec.leaf_bytes` (the 8-byte position
  then the event's stored bytes, SPEC §4), exactly what is hashed into the level-0 tile.
- Paths are canonical only: ``L`` 0..63 without leading zeros, ``N`` in 3-digit groups, all but
  the last prefixed ``x``, no leading ``x000`` group, ``W`` 1..255 without leading zeros. Any
  other spelling of a tile is refused (`TileNotFoundError`), so each tile has one URL.

What exists for a tree of ``size`` leaves: at level L, ``size // 256**L`` hashes; so a full tile
exists when its 256 hashes do, a partial tile of width W when its first W do (the first W hashes
of a level never change once they exist, so every such partial tile stays valid: a client with
an older checkpoint finds the partial tiles its tree size calls for). Anything else is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from ledger.codec import leaf_bytes
from ledger.errors import NotFoundError, StorageError
from ledger.merkle import HASH_SIZE, NodeReader

__all__ = [
    "TILE_WIDTH",
    "EntryTooLargeError",
    "Tile",
    "TileNotFoundError",
    "encode_index",
    "parse_entry_bundle",
    "parse_tile_path",
    "read_tile",
    "tile_width",
]

TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT
"""A full tile holds 256 hashes (an entry bundle 256 entries)."""

MAX_LEVEL: Final = 63
MAX_ENTRY_BYTES: Final = 0xFFFF
"""An entry's length is a uint16 in a bundle: no leaf longer than this can be served there."""

_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_GROUP = re.compile(r"x[0-9]{3}")
_LAST = re.compile(r"[0-9]{3}")


class TileNotFoundError(NotFoundError):
    """No such tile: a malformed or non-canonical path, or a tile beyond the tree (HTTP 404)."""


class EntryTooLargeError(StorageError):
    """A leaf longer than an entry bundle can hold (65535 bytes): that bundle cannot be served."""


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile: `level` (None for an entry bundle), `index`, and `width` (256 for a full one)."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    def path(self) -> str:
        """The canonical path, e.g. ``tile/0/x001/234.p/5`` or ``tile/entries/000``."""
        level = "entries" if self.level is None else str(self.level)
        suffix = f".p/{self.width}" if self.partial else ""
        return f"tile/{level}/{encode_index(self.index)}{suffix}"


def encode_index(index: int) -> str:
    """The tlog-tiles spelling of a tile index: 1234067 -> ``x001/x234/067``."""
    if index < 0:
        raise ValueError(f"a tile index is not negative, got {index}")
    groups = []
    while True:
        groups.append(f"{index % 1000:03d}")
        index //= 1000
        if not index:
            break
    groups.reverse()
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


def parse_tile_path(path: str) -> Tile:
    """Read a tile path (``tile/...``, a leading ``/`` allowed); `TileNotFoundError` unless it
    is the canonical path of a tile or an entry bundle."""
    parts = path.removeprefix("/").split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileNotFoundError(f"not a tile path: {path!r}")
    level_text, rest = parts[1], parts[2:]
    if level_text == "entries":
        level = None
    elif _LEVEL.fullmatch(level_text) and int(level_text) <= MAX_LEVEL:
        level = int(level_text)
    else:
        raise TileNotFoundError(f"tile level {level_text!r} is not a decimal from 0 to 63")
    width = TILE_WIDTH
    if rest[-1] != "" and len(rest) >= 2 and rest[-2].endswith(".p"):
        width_text = rest[-1]
        if not _WIDTH.fullmatch(width_text) or int(width_text) >= TILE_WIDTH:
            raise TileNotFoundError(f"partial tile width {width_text!r} is not from 1 to 255")
        width = int(width_text)
        rest = [*rest[:-2], rest[-2].removesuffix(".p")]
    *groups, last = rest
    if not _LAST.fullmatch(last) or not all(_GROUP.fullmatch(g) for g in groups):
        raise TileNotFoundError(
            f"tile index {'/'.join(rest)!r} is not 3-digit groups, all but the last "
            "starting with 'x'"
        )
    if groups and groups[0] == "x000":
        raise TileNotFoundError(f"tile index {'/'.join(rest)!r} has a leading zero group")
    index = int("".join(g[1:] for g in groups) + last)
    if index >= 1 << 64:
        raise TileNotFoundError(f"tile index {index} is beyond any tree")
    return Tile(level, index, width)


def tile_width(tile: Tile, size: int) -> int:
    """How many hashes (entries) of `tile`'s position exist in a tree of `size` leaves (0-256)."""
    level = tile.level or 0
    present = (size >> (TILE_HEIGHT * level)) - tile.index * TILE_WIDTH
    return max(0, min(TILE_WIDTH, present))


def _check_exists(tile: Tile, size: int) -> None:
    available = tile_width(tile, size)
    if available < tile.width:
        what = "entry bundle" if tile.level is None else "tile"
        shape = f"partial (width {tile.width})" if tile.partial else "full"
        raise TileNotFoundError(
            f"{what} {tile.path()}: a {shape} {what} is not in the tree of {size} entries "
            f"(it holds {available} there)"
        )


def tile_hashes(nodes: NodeReader, tile: Tile, size: int) -> bytes:
    """The bytes of hash tile `tile` in the tree of `size` leaves stored in `nodes`.

    Reads the stored nodes at tree level ``8 * level``; with a reader that offers
    ``get_span(level, start, count) -> bytes`` (both backends' snapshot readers), in one go.
    """
    if tile.level is None:
        raise TileNotFoundError("an entry bundle is not a hash tile")
    _check_exists(tile, size)
    level, start = TILE_HEIGHT * tile.level, tile.index * TILE_WIDTH
    get_span: Callable[[int, int, int], bytes] | None = getattr(nodes, "get_span", None)
    try:
        if get_span is not None:
            data = get_span(level, start, tile.width)
        else:
            data = b"".join(nodes.get(level, start + i) for i in range(tile.width))
    except KeyError as e:
        raise StorageError(
            f"the stored tree lacks node {e.args[0]!r} of tile {tile.path()} (size {size})"
        ) from e
    if len(data) != tile.width * HASH_SIZE:
        raise StorageError(f"the stored tree gave {len(data)} bytes for tile {tile.path()}")
    return data


ReadStored = Callable[[int, int], Iterable[tuple[int, bytes]]]
"""(first position, last position) -> the stored bytes of those events, in order."""


def entry_bundle(read_stored: ReadStored, tile: Tile, size: int) -> bytes:
    """The bytes of entry bundle `tile`: each leaf (position || stored bytes, SPEC §4) of the
    bundle's range, after its big-endian uint16 length. `EntryTooLargeError` if a leaf is longer
    than 65535 bytes (the format cannot say so)."""
    if tile.level is not None:
        raise TileNotFoundError("a hash tile is not an entry bundle")
    _check_exists(tile, size)
    first = tile.index * TILE_WIDTH + 1
    out = bytearray()
    expected = first
    for position, stored in read_stored(first, first + tile.width - 1):
        if position != expected:
            raise StorageError(f"the log gave position {position} where {expected} belongs")
        leaf = leaf_bytes(position, stored)
        if len(leaf) > MAX_ENTRY_BYTES:
            raise EntryTooLargeError(
                f"entry bundle {tile.path()}: the leaf at position {position} is {len(leaf)} "
                f"bytes, more than the {MAX_ENTRY_BYTES} a tlog-tiles bundle can hold; "
                "prove it with `adminchain prove` instead"
            )
        out += len(leaf).to_bytes(2, "big")
        out += leaf
        expected += 1
    if expected != first + tile.width:
        raise StorageError(f"the log ended at position {expected - 1} inside {tile.path()}")
    return bytes(out)


def parse_entry_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle (for clients and tests); `ValueError` on a truncated one."""
    entries, offset = [], 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise ValueError("entry bundle truncated inside a length")
        length = int.from_bytes(data[offset : offset + 2], "big")
        offset += 2
        if offset + length > len(data):
            raise ValueError("entry bundle truncated inside an entry")
        entries.append(data[offset : offset + length])
        offset += length
    return entries


def read_tile(nodes: NodeReader, read_stored: ReadStored, tile: Tile, size: int) -> bytes:
    """A hash tile or an entry bundle of the tree of `size` leaves, by `tile.level`."""
    if tile.level is None:
        return entry_bundle(read_stored, tile, size)
    return tile_hashes(nodes, tile, size)
