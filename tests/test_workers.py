"""The one protocol between replay and its worker processes (`replay.workers`): frames of
msgspec msgpack, each after its length; the end of the stream or a cut frame is a failed
worker, never a hang or a wrong answer."""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from ledger.events import KeepAliveFailed
from ledger.ledger import Ledger
from ledger.notes import Checkpoint
from projections.api import Views
from replay import integrity, workers
from replay.integrity import make_checkpoint

PAIR = msgspec.msgpack.Decoder(tuple[int, bytes] | None)


def test_frames_read_back_in_order_whatever_their_size() -> None:
    stream = io.BytesIO()
    messages: list[tuple[int, bytes] | None] = [(1, b""), (2, bytes(range(256)) * 4096), None]
    for message in messages:
        workers.write_frame(stream, message)
    stream.seek(0)
    assert [workers.read_frame(stream, PAIR) for _ in messages] == messages
    with pytest.raises(workers.WorkerFailed, match="ended after 0 of 8 bytes"):
        workers.read_frame(stream, PAIR)  # the end of the stream: no further message


def test_a_frame_is_its_length_then_msgpack() -> None:
    stream = io.BytesIO()
    workers.write_frame(stream, (7, b"\x01"))
    body = msgspec.msgpack.encode((7, b"\x01"))
    assert stream.getvalue() == struct.pack(">Q", len(body)) + body


@pytest.mark.parametrize("cut", [0, 3, 8, 9])
def test_a_cut_frame_is_a_failed_worker(cut: int) -> None:
    stream = io.BytesIO()
    workers.write_frame(stream, (7, b"digest" * 10))
    with pytest.raises(workers.WorkerFailed, match="the stream ended"):
        workers.read_frame(io.BytesIO(stream.getvalue()[:cut]), PAIR)


def test_a_message_of_another_type_is_a_failed_worker() -> None:
    stream = io.BytesIO()
    workers.write_frame(stream, {"size": 7})
    stream.seek(0)
    with pytest.raises(workers.WorkerFailed, match="not the expected message"):
        workers.read_frame(stream, PAIR)


def test_an_unbuffered_stream_is_read_to_the_whole_frame() -> None:
    """Through a pipe without a buffer, a read may return less than asked: the frame is still
    read whole (its message is bigger than the pipe holds at once)."""
    read, write = os.pipe()
    message = (3, b"x" * 300_000)

    def writer() -> None:
        with open(write, "wb", buffering=0) as out:
            workers.write_frame(out, message)

    thread = threading.Thread(target=writer)
    thread.start()
    with open(read, "rb", buffering=0) as inp:
        assert workers.read_frame(inp, PAIR) == message
    thread.join()


@pytest.fixture
def ledger_with_checkpoint(tmp_path: Path) -> tuple[str, bytes]:
    path = str(tmp_path / "ledger.lmdb")
    with Ledger.open(path) as log:
        log.append_batch([KeepAliveFailed(subject=f"r{i % 5}") for i in range(40)])
        checkpoint, _ = make_checkpoint(Views(log))
    return path, checkpoint.state_digest


def test_a_worker_process_answers_in_frames(ledger_with_checkpoint: tuple[str, bytes]) -> None:
    """The digests job, started for real: the request goes in as a frame, each digest comes out
    as one, then None; then the stream ends."""
    path, digest = ledger_with_checkpoint
    process = workers.start("digests", integrity._DigestsRequest(path, [40]))
    assert process is not None
    try:
        assert workers.receive(process, PAIR) == (40, digest)
        assert workers.receive(process, PAIR) is None
        with pytest.raises(workers.WorkerFailed):
            workers.receive(process, PAIR)
    finally:
        workers.stop(process)
    assert process.returncode == 0


def test_a_worker_that_fails_sends_no_frame(tmp_path: Path) -> None:
    """A worker that cannot open its ledger ends without a message: its starter sees
    `WorkerFailed` (and does the work itself), it does not wait for ever."""
    nowhere = str(tmp_path / "nowhere")
    process = workers.start("digests", integrity._DigestsRequest(nowhere, [40]))
    assert process is not None
    try:
        with pytest.raises(workers.WorkerFailed, match="ended after 0 of 8 bytes"):
            workers.receive(process, PAIR)
    finally:
        workers.stop(process)
    assert process.returncode != 0
    assert not Path(nowhere).exists()


def test_digests_from_a_worker_equal_those_folded_here(
    ledger_with_checkpoint: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, digest = ledger_with_checkpoint
    monkeypatch.setattr(workers, "PARALLEL_FROM", 1)

    def not_here(*_: object) -> Iterator[tuple[int, bytes]]:
        raise AssertionError("folded here, not by the worker")

    with Ledger.open(path, create=False) as log:
        assert Checkpoint.open(dict(log.checkpoints())[40], None).state_digest == digest
        monkeypatch.setattr(integrity, "checkpoint_digests", not_here)
        digests = integrity._Digests(log, [40])
        try:
            assert digests.get([40]) == {40: digest}
        finally:
            digests.close()
