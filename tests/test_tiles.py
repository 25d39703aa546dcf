"""C2SP tlog-tiles from the stored tree (`ledger.tiles`, SPEC-server §9).

Every tile and entry bundle is checked against a recomputation from the leaves alone (SHA-256
of the stored events, paired level by level here, not by `ledger.merkle`), for random tree sizes
across tile boundaries, on both backends; paths are checked against the spec's own examples.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.codec import leaf_bytes
from ledger.events import Event, HealthObserved, MembershipObserved
from ledger.ledger import Ledger
from ledger.tiles import (
    TILE_WIDTH,
    EntryTooLargeError,
    Tile,
    TileNotFoundError,
    encode_index,
    parse_entry_bundle,
    parse_tile_path,
    read_tile,
    tile_width,
)
from tests.conftest import drop_pg_schema, fresh_pg_url

SIZE = 65_536 + 4 * 256 + 37
"""Big enough for a full level-1 tile and partial tiles on levels 0, 1 and 2."""

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def _event(i: int) -> Event:
    # subjects of varied length, so that entries in a bundle differ in length
    return HealthObserved(
        subject=f"node-{i % 97}{'x' * (i % 13)}", at=T0 + timedelta(seconds=i), healthy=i % 3 > 0
    )


class Reference:
    """The tree recomputed from the stored events: every perfect subtree, level by level."""

    def __init__(self, stored: list[bytes]) -> None:
        self.leaves = [leaf_bytes(p, s) for p, s in enumerate(stored, start=1)]
        level = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in self.leaves]
        self.levels = [level]
        while len(level) > 1:
            level = [
                hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
                for i in range(0, len(level) - 1, 2)
            ]
            self.levels.append(level)

    def tile(self, level: int, index: int, width: int) -> bytes:
        """MTH(D[(n*256 + i) * 256**l : (n*256 + i + 1) * 256**l]) for i < width."""
        return b"".join(self.levels[8 * level][index * TILE_WIDTH : index * TILE_WIDTH + width])

    def bundle(self, index: int, width: int) -> list[bytes]:
        return self.leaves[index * TILE_WIDTH : index * TILE_WIDTH + width]


@pytest.fixture(
    scope="module", params=["lmdb", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Ledger, Reference]]:
    """One ledger of SIZE events per backend, and its reference tree."""
    if request.param == "lmdb":
        target = str(tmp_path_factory.mktemp("tiles") / "ledger.lmdb")
    else:
        target = fresh_pg_url()
    ledger = Ledger.open(target)
    try:
        for start in range(0, SIZE, 20_000):
            ledger.append_batch([_event(i) for i in range(start, min(SIZE, start + 20_000))])
        stored = [s for _, s in ledger.read_stored(1)]
        yield ledger, Reference(stored)
    finally:
        ledger.close()
        if request.param == "postgres":
            drop_pg_schema(target)


def _serve(ledger: Ledger, path: str, size: int) -> bytes:
    tile = parse_tile_path(path)
    return read_tile(ledger.backend.read_nodes(), ledger.read_stored, tile, size)


def _expected_tiles(size: int) -> Iterator[tuple[int, int, int]]:
    """(level, index, width) of every tile the spec says a tree of `size` has."""
    level = 0
    while size >> (8 * level):
        hashes = size >> (8 * level)
        for index in range(hashes // TILE_WIDTH):
            yield level, index, TILE_WIDTH
        if hashes % TILE_WIDTH:
            yield level, hashes // TILE_WIDTH, hashes % TILE_WIDTH
        level += 1


def test_the_spec_example_sizes() -> None:
    """tlog-tiles: a tree of 70,000 has 273 full level-0 tiles, a partial one of width 112, one
    full level-1 tile, a partial one of 17 and a partial level-2 tile of 1; a tree of 256 has
    one full level-0 tile and a partial level-1 tile of width 1."""
    tiles = list(_expected_tiles(70_000))
    assert [t for t in tiles if t[0] == 0 and t[2] == 256] == [(0, n, 256) for n in range(273)]
    assert [t for t in tiles if t[2] < 256] == [(0, 273, 112), (1, 1, 17), (2, 0, 1)]
    assert [t for t in tiles if t[0] == 1 and t[2] == 256] == [(1, 0, 256)]
    assert list(_expected_tiles(256)) == [(0, 0, 256), (1, 0, 1)]
    assert tile_width(Tile(0, 273), 70_000) == 112
    assert tile_width(Tile(2, 0), 70_000) == 1


@pytest.mark.parametrize(
    ("path", "tile"),
    [
        ("tile/0/000", Tile(0, 0)),
        ("tile/0/x001/x234/067", Tile(0, 1_234_067)),  # the spec's example index
        ("tile/1/x001/234.p/5", Tile(1, 1234, 5)),
        ("/tile/entries/x010/000.p/255", Tile(None, 10_000, 255)),
        ("tile/63/999", Tile(63, 999)),
    ],
)
def test_paths_round_trip(path: str, tile: Tile) -> None:
    assert parse_tile_path(path) == tile
    assert tile.path() == path.removeprefix("/")
    assert encode_index(1_234_067) == "x001/x234/067"


@pytest.mark.parametrize(
    "path",
    [
        "tile/00/000",  # leading zero in the level
        "tile/64/000",  # level above 63
        "tile/0/0",  # index not 3 digits
        "tile/0/0000",
        "tile/0/001/234",  # all but the last group need the x
        "tile/0/x001/x234",  # the last group has none
        "tile/0/x000/005",  # a leading zero group: 5 is spelled 005
        "tile/0/005.p/0",  # width 0
        "tile/0/005.p/256",  # a full tile has no .p
        "tile/0/005.p/07",  # leading zero in the width
        "tile/0/005.p",
        "tile/0/005/",
        "tile/-1/000",
        "tile/entries",
        "tiles/0/000",
        "tile/0/x1/000",
    ],
)
def test_non_canonical_paths_are_refused(path: str) -> None:
    with pytest.raises(TileNotFoundError):
        parse_tile_path(path)


@given(size=st.integers(min_value=1, max_value=SIZE), data=st.data())
def test_every_tile_matches_the_leaves(
    built: tuple[Ledger, Reference], size: int, data: st.DataObject
) -> None:
    """For a random tree size: every tile and bundle the spec says exists is served with the
    recomputed bytes (full tiles at 8192 bytes), the next width up and the next tile are not."""
    ledger, ref = built
    for level, index, width in _expected_tiles(size):
        suffix = f".p/{width}" if width < TILE_WIDTH else ""
        path = f"tile/{level}/{encode_index(index)}{suffix}"
        body = _serve(ledger, path, size)
        assert body == ref.tile(level, index, width), path
        assert len(body) == 32 * width
        if level == 0:
            bundle = _serve(ledger, f"tile/entries/{encode_index(index)}{suffix}", size)
            assert parse_entry_bundle(bundle) == ref.bundle(index, width)
            hashes = [hashlib.sha256(b"\x00" + e).digest() for e in parse_entry_bundle(bundle)]
            assert b"".join(hashes) == body  # each entry hashes to its level-0 tile hash
        if width < TILE_WIDTH:  # the next width and the full tile are not there yet
            wider = f"tile/{level}/{encode_index(index)}" + (
                f".p/{width + 1}" if width + 1 < TILE_WIDTH else ""
            )
            with pytest.raises(TileNotFoundError):
                _serve(ledger, wider, size)
        if index == ((size >> (8 * level)) - 1) // TILE_WIDTH:  # the level's last tile
            with pytest.raises(TileNotFoundError):
                _serve(ledger, f"tile/{level}/{encode_index(index + 1)}.p/1", size)
    # a partial tile of any smaller width of an existing tile: the prefix of its hashes
    level = data.draw(st.integers(0, 2))
    count = size >> (8 * level)
    if count:
        index = data.draw(st.integers(0, (count - 1) // TILE_WIDTH))
        width = data.draw(st.integers(1, min(255, count - index * TILE_WIDTH)))
        path = f"tile/{level}/{encode_index(index)}.p/{width}"
        assert _serve(ledger, path, size) == ref.tile(level, index, width)
    # nothing at all above the top
    with pytest.raises(TileNotFoundError):
        _serve(ledger, f"tile/{(size.bit_length() + 7) // 8}/000.p/1", size)


def test_a_leaf_too_long_for_a_bundle(tmp_path: Path) -> None:
    """An event whose leaf exceeds 65535 bytes: its bundle is refused with the reason; the hash
    tile (all a proof needs) is still served."""
    with Ledger.open(tmp_path / "big.lmdb") as ledger:
        ledger.append(_event(0))
        peers = [f"peer-{i:06d}-{'p' * 20}" for i in range(3000)]
        ledger.append(MembershipObserved(subject="cluster-1", at=T0, peers=peers))
        with pytest.raises(EntryTooLargeError, match="position 2 is"):
            _serve(ledger, "tile/entries/000.p/2", 2)
        assert len(_serve(ledger, "tile/entries/000.p/1", 2)) > 0
        assert len(_serve(ledger, "tile/0/000.p/2", 2)) == 64
