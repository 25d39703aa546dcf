"""Big appends in bounded memory: the input is prepared in chunks on disk, then stored in ONE
transaction (SPEC §1: a batch is appended atomically, all or none).

`Ledger.append_bulk` works in two passes. The first reads the input a chunk at a time
(`CHUNK` events), validates it, fills in ids and times, encodes the stored records and writes
them to a `Spool` (a temporary file), so that a bad line anywhere is found before anything is
written, and memory holds one chunk, not the whole input. The second pass runs inside one
write transaction of the backend (`ledger.backend.apply_requests`): it reads the spool back a
chunk at a time and inserts each chunk. If the transaction is retried (an LMDB map that had to
grow), the spool is simply read again. On LMDB, an input of more than `COMMIT` events is
stored in several commits that stay invisible until the last one (staged: see
`ledger.lmdb_backend`), so the memory of the write is bounded too; readers and other writers
see the append all at once or not at all, as with one transaction. The result (`BulkResult`)
keeps each event's position in a compact array and reads the ids back from the spool when iterated.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Final

import msgspec

from ledger.backend import Appended
from ledger.codec import record_decoder
from ledger.errors import StorageError
from ledger.events import Event

__all__ = ["CHUNK", "COMMIT", "BulkResult", "Chunk", "Spool"]

CHUNK: Final = 10_000
"""Events prepared, spooled and stored together: bounds the memory of a big append."""

COMMIT = 20_000
"""On LMDB, a big append of more events than this is committed this many at a time behind a
marker that keeps them invisible until its last commit (`ledger.lmdb_backend`, "Staged
appends"): a write transaction holds every page it dirties in memory, so one transaction for
the whole input would take memory in proportion to it (about 5 times the input's JSON)."""

_LENGTH: Final = 8


class Chunk(msgspec.Struct, array_like=True):
    """Up to `CHUNK` prepared events, as they will be stored."""

    lines: list[int]
    """The input line of each event (for messages)."""
    rows: list[tuple[str, str, str, bytes]]
    """(subject, type, id, stored bytes) of each event: what `TxnOps.insert` takes."""
    minted: list[bool]
    """Whether the ledger made the event's id (a fresh UUID: it need not be looked up)."""
    stamped: list[bool]
    """Whether the ledger filled in the event's `at` (its clock at append)."""

    def events(self) -> list[Event]:
        """The events as they will be stored (ids and times filled in)."""
        decode = record_decoder.decode
        return [decode(row[3]).event for row in self.rows]

    def originals(self, events: list[Event]) -> list[Event]:
        """The events as the input gave them (what a signature covers), from `events()`: the id
        and the time the ledger filled in are taken out again."""
        replace = msgspec.structs.replace
        out: list[Event] = []
        for event, minted, stamped in zip(events, self.minted, self.stamped, strict=True):
            filled = {**({"id": None} if minted else {}), **({"at": None} if stamped else {})}
            out.append(replace(event, **filled) if filled else event)
        return out

    def minted_ids(self) -> frozenset[str]:
        """The ids the ledger made for this chunk."""
        return frozenset(row[2] for row, m in zip(self.rows, self.minted, strict=True) if m)


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Chunk)


class Spool:
    """Prepared chunks in a temporary file (deleted when closed), read back as often as needed."""

    def __init__(self, directory: str | None = None) -> None:
        import tempfile  # noqa: PLC0415  only big appends spool: `status` starts without it

        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115  closed by close()
        self.count = 0
        """Events spooled."""
        self.recorded_at = datetime.now(UTC)
        """The time the ledger records for the events (its clock when spooling began)."""
        self.chunks = 0

    def add(self, chunk: Chunk) -> None:
        """Write one chunk at the end of the spool."""
        data = _encoder.encode(chunk)
        try:
            self._file.write(len(data).to_bytes(_LENGTH, "big"))
            self._file.write(data)
        except OSError as e:  # a full disk, a file size limit: nothing is stored yet
            raise StorageError(
                f"the append could not be written to its spool (a temporary file): {e}"
            ) from e
        self.count += len(chunk.rows)
        self.chunks += 1

    def read(self) -> Iterator[Chunk]:
        """Every chunk, in order, from the start (each reading keeps its own place: several may
        go on at once, e.g. the results and the input lines side by side)."""
        self._file.flush()
        fd, offset = self._file.fileno(), 0
        for _ in range(self.chunks):
            length = int.from_bytes(os.pread(fd, _LENGTH, offset), "big")
            data = os.pread(fd, length, offset + _LENGTH)
            offset += _LENGTH + length
            yield _decoder.decode(data)

    def close(self) -> None:
        self._file.close()


class BulkResult:
    """What `Ledger.append_bulk` did: each event's position (compactly) and whether it was a
    repeat; iterating gives `Appended` per input event, in input order, ids read back from the
    spool (iterate before the ledger is closed)."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self.positions = array("q")
        self.duplicate = bytearray()

    def clear(self) -> None:
        """Forget the results (the transaction is being run again)."""
        self.positions = array("q")
        self.duplicate = bytearray()

    def extend(self, appended: Sequence[Appended]) -> None:
        """Record one stored chunk's results."""
        self.positions.extend(a.position for a in appended)
        self.duplicate.extend(a.duplicate for a in appended)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def stored(self) -> int:
        """Events stored (not repeats of stored ones)."""
        return len(self.duplicate) - sum(self.duplicate)

    def span(self) -> tuple[int, int] | None:
        """The first and last positions stored, if any."""
        first, last = self.duplicate.find(0), self.duplicate.rfind(0)
        return None if first < 0 else (self.positions[first], self.positions[last])

    def inputs(self) -> Iterator[tuple[int, str, str]]:
        """(input line, type, subject) of each event, in input order, read back from the spool."""
        for chunk in self._spool.read():
            for line, row in zip(chunk.lines, chunk.rows, strict=True):
                yield line, row[1], row[0]

    def __iter__(self) -> Iterator[Appended]:
        index = 0
        positions, duplicate = self.positions, self.duplicate
        for chunk in self._spool.read():
            for row in chunk.rows:
                yield Appended(positions[index], row[2], bool(duplicate[index]))
                index += 1
