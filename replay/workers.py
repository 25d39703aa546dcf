"""Second processes for long replays and verifications: the other core's share of the work.

A worker is ``python -m replay JOB`` (`replay.__main__`): a fresh interpreter that imports
nothing of the caller's program (unlike `multiprocessing`'s spawn, which re-runs the caller's
main module). Whoever starts it falls back to doing the work itself if it fails, so a worker only
makes things faster.

One protocol for every job: a message is a *frame*, its length as 8 bytes (big-endian) and then
that many bytes of msgspec msgpack. The starter writes one frame, the request, on the worker's
stdin (`start`; the worker reads it with `request`); the worker writes its answer as frames on
stdout (`send`; the starter reads them with `receive`) and exits. A worker that fails writes no
further frame: its starter reads the end of the pipe, or a cut frame, as `WorkerFailed`.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, Final, TypeVar

import msgspec

__all__ = [
    "PARALLEL_FROM",
    "WorkerFailed",
    "read_frame",
    "ready",
    "receive",
    "request",
    "send",
    "start",
    "stop",
    "write_frame",
]

PARALLEL_FROM = 100_000
"""From this many events, replay and verify share the work with a second process (on two cores
the two halves overlap); below it, starting a process costs more than it saves."""

T = TypeVar("T")

_LENGTH: Final = struct.Struct(">Q")
_ENCODER: Final = msgspec.msgpack.Encoder()


class WorkerFailed(Exception):  # noqa: N818  a worker's end, not a programming error
    """The other side ended before a whole frame, or sent one that is not the expected message."""


def write_frame(stream: IO[bytes], message: object) -> None:
    """Write `message` as one frame and flush it."""
    data = _ENCODER.encode(message)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def read_frame(stream: IO[bytes], decoder: msgspec.msgpack.Decoder[T]) -> T:
    """Read one frame and decode it with `decoder`; `WorkerFailed` at the end of the stream, on
    a cut frame, or on a message of another type."""
    (length,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    data = _read_exactly(stream, length)
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as e:  # a ValidationError too
        raise WorkerFailed(f"not the expected message: {e}") from e


def _read_exactly(stream: IO[bytes], count: int) -> bytes:
    data = stream.read(count)  # a buffered stream reads until `count` bytes or the end
    while 0 < len(data) < count and (more := stream.read(count - len(data))):
        data += more  # an unbuffered one may return less
    if len(data) != count:
        raise WorkerFailed(f"the stream ended after {len(data)} of {count} bytes")
    return data


def start(job: str, message: object) -> subprocess.Popen[bytes] | None:
    """Start ``python -m replay JOB`` with the request `message` on its stdin; None if it
    cannot start."""
    root = str(Path(__file__).resolve().parent.parent)  # where this package is importable from
    path = os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))
    try:
        process = subprocess.Popen(  # noqa: S603  our own module, no shell
            [sys.executable, "-m", "replay", job],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=path),
        )
    except OSError:
        return None
    try:
        assert process.stdin is not None
        write_frame(process.stdin, message)
        process.stdin.close()
    except OSError:
        stop(process)
        return None
    return process


def receive(process: subprocess.Popen[bytes], decoder: msgspec.msgpack.Decoder[T]) -> T:
    """The worker's next message (`WorkerFailed` if it ended without it)."""
    assert process.stdout is not None
    return read_frame(process.stdout, decoder)


def ready(process: subprocess.Popen[bytes]) -> bool:
    """True if the worker has written something not read yet (`receive` then returns soon), or
    ended."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], 0)
    return bool(readable)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the worker if it still runs (its answer is no longer needed) and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def request(decoder: msgspec.msgpack.Decoder[T]) -> T:
    """In a worker: the request its starter wrote on stdin."""
    return read_frame(sys.stdin.buffer, decoder)


def send(message: object) -> None:
    """In a worker: write one message of its answer on stdout."""
    write_frame(sys.stdout.buffer, message)
