"""The tlog-tiles routes and the checkpoint publisher of `adminchain serve` (SPEC-server §7.1,
§9), in process (Litestar's test client over `create_app`): every tile response's bytes against
a recomputation from the leaves (property test), roles, caching headers, refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient

from adminchain.server.app import ServerConfig, create_app
from adminchain.server.publish import Publisher
from adminchain.server.tiles import TILE_ROUTES
from adminchain.server.tokens import create_token
from ledger.cosign import Cosigner
from ledger.ledger import Ledger
from ledger.notes import Checkpoint, Signer
from ledger.tiles import TILE_WIDTH, encode_index, parse_entry_bundle
from ledger.witness import QuorumError, WitnessEndpoint
from projections.api import Views
from tests.test_tiles import Reference, _event

SIZE = 3 * 256 * 256 // 2 + 300  # level 1 with full and partial tiles


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Reference, str]]:  # type: ignore[type-arg]
    path = tmp_path_factory.mktemp("served") / "ledger.lmdb"
    with Ledger.open(path) as ledger:
        for start in range(0, SIZE, 20_000):
            ledger.append_batch([_event(i) for i in range(start, min(SIZE, start + 20_000))])
        reference = Reference([s for _, s in ledger.read_stored(1)])
        token, _ = create_token(ledger, "audit", "auditor")
        reader, _ = create_token(ledger, "reads", "reader")
    app = create_app(ServerConfig(ledger=str(path), extra_routes=TILE_ROUTES))
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, reference, reader


@given(
    level=st.integers(0, 2),
    index=st.integers(0, 70),
    width=st.integers(1, TILE_WIDTH),
    entries=st.booleans(),
)
def test_every_tile_response_matches_the_leaves(
    served: tuple[TestClient, Reference, str],  # type: ignore[type-arg]
    level: int,
    index: int,
    width: int,
    entries: bool,
) -> None:
    client, ref, _ = served
    kind = "entries" if entries else str(level)
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    response = client.get(f"/tile/{kind}/{encode_index(index)}{suffix}")
    present = (SIZE >> (8 * (0 if entries else level))) - index * TILE_WIDTH
    if present < width:
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        return
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    expected_cache = "private, max-age=5" if suffix else "private, max-age=31536000, immutable"
    assert response.headers["cache-control"] == expected_cache
    if entries:
        assert parse_entry_bundle(response.content) == ref.bundle(index, width)
    else:
        assert response.content == ref.tile(level, index, width)


def test_roles_gzip_and_the_checkpoint(
    served: tuple[TestClient, Reference, str],  # type: ignore[type-arg]
) -> None:
    client, ref, reader = served
    assert client.get("/tile/0/000", headers={"Authorization": ""}).status_code == 401
    as_reader = {"Authorization": f"Bearer {reader}"}
    assert client.get("/tile/0/000", headers=as_reader).status_code == 403
    raw = client.get("/tile/entries/001", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["vary"] == "Accept-Encoding"
    # the test client decodes gzip itself: the bytes are the bundle either way
    assert parse_entry_bundle(raw.content) == ref.bundle(1, TILE_WIDTH)
    assert raw.headers["content-encoding"] == "gzip"
    assert client.get("/checkpoint").status_code == 404  # nothing published yet
    client.app.state.server.ledger.put_checkpoint(5, "a note\n")
    published = client.get("/checkpoint")
    assert published.text == "a note\n"
    assert published.headers["cache-control"] == "private, max-age=5"  # a token was needed
    assert published.headers["content-type"] == "text/plain; charset=utf-8"
    signed = "a note\n\n\u2014 k AAAA\n"
    client.app.state.server.ledger.put_checkpoint(6, signed)
    client.app.state.server.ledger.put_checkpoint(7, "a later unsigned note\n")
    assert client.get("/checkpoint").text == signed  # the newest signed one
    for path in ("/tile/0/x000/001", "/tile/0/1", "/tile/64/000", "/tile/0/000.p/256"):
        assert client.get(path).status_code == 404, path


def test_publisher_publishes_while_the_log_grows_and_needs_its_quorum(tmp_path: Path) -> None:
    """Without witnesses: a signed checkpoint with the projection digest at each tick while
    the log grows, none when it does not. With a quorum it cannot reach: nothing published.
    (On a stand-in for the server's state: `create_app` registers its metrics globally, once
    per process.)"""
    signer = Signer.generate("log.example")
    with Ledger.open(tmp_path / "ledger.lmdb") as ledger:
        ledger.append_batch([_event(i) for i in range(10)])
        server = SimpleNamespace(
            ledger=ledger, views=Views(ledger), hub=SimpleNamespace(tracking=10),
            last_checkpoint=None,
        )  # fmt: skip
        publisher = Publisher(signer, every=0.05)
        stop = publisher.start(server)
        try:
            deadline = time.monotonic() + 30
            while not ledger.checkpoints() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # several more ticks: the log does not grow
        finally:
            stop()
        assert publisher.published == 1
        ((size, note),) = ledger.checkpoints()
        checkpoint = Checkpoint.open(note, [signer.verifier])
        assert (size, checkpoint.size) == (10, 10)
        assert checkpoint.state_digest != bytes(32)
        ledger.append_batch([_event(i) for i in range(10, 20)])
        server.hub.tracking = 20
        assert publisher.tick(server) is not None  # grown: published
        assert publisher.tick(server) is None  # not grown since
        ledger.append_batch([_event(i) for i in range(20, 30)])
        server.hub.tracking = 30
        dead = WitnessEndpoint("http://127.0.0.1:9", Cosigner.generate("w.example/dead").key)
        quorum = Publisher(signer, every=0.05, witnesses=[dead], quorum=1)
        with pytest.raises(QuorumError, match="only 0 of 1 witness"):
            quorum.tick(server)
        assert [s for s, _ in ledger.checkpoints()] == [10, 20]  # nothing published
