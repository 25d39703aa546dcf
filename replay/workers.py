"""Second processes for long replays, verifications and catch-ups: the other core's share.

A worker is ``python -m replay JOB`` (`replay.__main__`): a fresh interpreter that imports
nothing of the caller's program (unlike `multiprocessing`'s spawn, which re-runs the caller's
main module). Whoever starts it falls back to doing the work itself if it fails, so a worker only
makes things faster.

An interpreter takes about 0.2 s to import the ledger: a fifth of a 500k-event replay. So a
command that will likely need a worker (the CLI's ``replay``, ``verify`` and ``catch-up`` on a
big local ledger) forks one *on standby* first (`standing_by`), with everything imported and no
ledger open yet (an LMDB environment must not be used across a fork, nor opened twice in one
process: the child opens its own). `start` then hands the job to it, which begins at once; a
standby that no job takes reads the end of its pipe and exits. Without a standby (the library,
a server with its threads, which a fork would copy mid-step), `start` starts the interpreter.
A forked worker runs the job's function from `replay.__main__` and ends with ``os._exit``: none
of the caller's finalizers or exit handlers run twice.

One protocol for every job: a message is a *frame*, its length as 8 bytes (big-endian) and then
that many bytes of msgspec msgpack. The starter writes one frame, the request, on the worker's
stdin (`start`; the worker reads it with `request`); the worker writes its answer as frames on
stdout (`send`; the starter reads them with `receive`) and exits. A worker that fails writes no
further frame: its starter reads the end of the pipe, or a cut frame, as `WorkerFailed`.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final, Protocol, TypeVar

import msgspec

__all__ = [
    "PARALLEL_FROM",
    "STANDBY_FROM",
    "Worker",
    "WorkerFailed",
    "read_frame",
    "ready",
    "receive",
    "request",
    "send",
    "standing_by",
    "start",
    "stop",
    "write_frame",
]

PARALLEL_FROM = 100_000
"""From this many events, replay and verify share the work with a second process (on two cores
the two halves overlap); below it, starting a process costs more than it saves."""

STANDBY_FROM = 24 << 20
"""`standing_by` forks a worker for a ledger directory of at least this many bytes: every
stored event takes some 250 bytes or more (its record, id and subject index entries, Merkle
leaf and nodes; about 600 for the benchmark's), so a smaller one holds fewer than
`PARALLEL_FROM` events and would not use it."""

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


class Worker(Protocol):
    """A started worker: a `subprocess.Popen`, or a forked one (`_Forked`)."""

    @property
    def stdout(self) -> IO[bytes] | None: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...

    def wait(self) -> int: ...


class _Forked:
    """A forked worker: as much of `subprocess.Popen` as `start`, `receive`, `ready` and `stop`
    use (`stdin`: where its job and request go)."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


_standby: _Forked | None = None
"""The worker `standing_by` forked, until `start` hands it a job."""

_input: IO[bytes] | None = None
_output: IO[bytes] | None = None
"""In a forked worker: where `request` reads and `send` writes (else stdin and stdout)."""

_JOB: Final = msgspec.msgpack.Decoder(str)


@contextmanager
def standing_by(location: str) -> Iterator[None]:
    """Within this block, a worker forked now stands by for `start` (see the module's
    docstring) if `location` is a ledger directory of at least `STANDBY_FROM` bytes, this
    process can fork and runs no other thread; at its end, one no job took is ended."""
    global _standby  # noqa: PLW0603  one standby per process
    forked = None
    if _standby is None and hasattr(os, "fork") and threading.active_count() == 1:
        try:
            big = sum(f.stat().st_size for f in Path(location).iterdir()) >= STANDBY_FROM
        except OSError:  # not a directory (a URL), or unreadable: no standby
            big = False
        forked = _fork(location) if big else None
    _standby = forked
    try:
        yield
    finally:
        if forked is not None and _standby is forked:
            _standby = None
            stop(forked)


def _fork(location: str) -> _Forked | None:
    """Fork a standby worker: it opens the ledger at `location` (`replay.__main__.prepare`:
    meanwhile, the caller opens it too), waits for a job's name and request on a pipe (`start`),
    runs the job (`replay.__main__.run`: its own opening of the ledger then finds it open), its
    answer going to another pipe; it ends at once if the pipe ends first. None if it cannot
    fork."""
    global _input, _output
    try:
        jobs, job_in = os.pipe()
        answer_out, answers = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the child: a job, then out, whatever happens
        code = 1
        try:
            os.close(job_in)
            os.close(answer_out)
            _input, _output = open(jobs, "rb"), open(answers, "wb")  # noqa: SIM115  _exit ends them
            from replay.__main__ import prepare, run  # noqa: PLC0415  it imports this module

            _opened = prepare(location)  # held until the job opens it too
            try:
                job = read_frame(_input, _JOB)
            except WorkerFailed:
                code = 0  # no job came: not needed
            else:
                run(job)
                _output.flush()
                code = 0
        finally:
            os._exit(code)
    os.close(jobs)
    os.close(answers)
    return _Forked(pid, open(job_in, "wb"), open(answer_out, "rb"))


def start(job: str, message: object) -> Worker | None:
    """Start the worker of `job` with the request `message`: the standby of `standing_by` if
    there is one, else ``python -m replay JOB``; None if it cannot start."""
    global _standby
    forked, _standby = _standby, None
    if forked is not None:
        try:
            write_frame(forked.stdin, job)
            write_frame(forked.stdin, message)
            forked.stdin.close()
        except OSError:
            stop(forked)
        else:
            return forked
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


def receive(process: Worker, decoder: msgspec.msgpack.Decoder[T]) -> T:
    """The worker's next message (`WorkerFailed` if it ended without it)."""
    assert process.stdout is not None
    return read_frame(process.stdout, decoder)


def ready(process: Worker) -> bool:
    """True if the worker has written something not read yet (`receive` then returns soon), or
    ended."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], 0)
    return bool(readable)


def stop(process: Worker) -> None:
    """Kill the worker if it still runs (its answer is no longer needed) and reap it."""
    if isinstance(process, _Forked) and not process.stdin.closed:  # a standby no job took
        process.stdin.close()  # it reads the end of its pipe and ends
    elif process.poll() is None:
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def request(decoder: msgspec.msgpack.Decoder[T]) -> T:
    """In a worker: the request its starter wrote on stdin."""
    return read_frame(_input or sys.stdin.buffer, decoder)


def send(message: object) -> None:
    """In a worker: write one message of its answer on stdout."""
    write_frame(_output or sys.stdout.buffer, message)
