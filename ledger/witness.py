"""A C2SP tlog-witness (c2sp.org/tlog-witness), and the log's side of it (SPEC-server §9).

`Witness` is the protocol without HTTP: `Witness.add_checkpoint` takes the body of ``POST
/add-checkpoint`` and returns the status, content type and body to answer with, exactly as the
spec orders the checks:

- 400 a malformed body (old size line, proof lines, empty line, signed checkpoint), or an old
  size above the checkpoint's size;
- 404 an origin the witness was not configured for;
- 403 no valid signature by a key configured for the origin, or such a key's signature fails;
- 409 the old size is not the size of the latest checkpoint it cosigned for the origin (0 if
  none): the body is that size and a newline, ``Content-Type: text/x.tlog.size``;
- 422 a size-0 checkpoint without the empty root, a proof from size 0, a consistency proof that
  does not verify, or the same size with a different root;
- 200 the cosignature lines (``cosignature/v1``, Ed25519, timestamped: `ledger.cosign`), only
  once the new checkpoint is durably stored.

The check and the update are one atomic step (a lock), and the latest checkpoint of each origin
is a file in the state directory, written to a temporary file, fsync'd, renamed over the old one
and the directory fsync'd before the answer: what a witness cosigned survives kill -9. The
directory is locked (flock) so that two witness processes never share it.

`request_cosignatures` is the log's side: it sends a checkpoint to each witness with a consistency
proof from the size it last cosigned (learning that size from a 409 if it did not know it).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ledger.cosign import Cosigner, CosignerKey, add_cosignatures, cosigned_by
from ledger.errors import LedgerError, ProofError, UsageError
from ledger.ledger import Ledger
from ledger.merkle import EMPTY_ROOT, check_consistency
from ledger.notes import Note, Verifier, decode_base64, open_note, parse_note

__all__ = [
    "Answer",
    "LogCheckpoint",
    "QuorumError",
    "Witness",
    "WitnessEndpoint",
    "add_checkpoint_body",
    "publish_checkpoint",
]

SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
MAX_PROOF_LINES: Final = 63
MAX_BODY: Final = 64 * 1024

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer an add-checkpoint request with."""

    status: int
    content_type: str
    body: str


@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    """The first three lines of any checkpoint (tlog-checkpoint), extension lines allowed."""

    origin: str
    size: int
    root: bytes

    @classmethod
    def parse(cls, body: str) -> LogCheckpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise ProofError("a checkpoint is an origin, a size, a root and extension lines")
        origin, size_text, root64 = lines[:3]
        if not _DECIMAL.fullmatch(size_text) or int(size_text) >= 1 << 64:
            raise ProofError(f"checkpoint size {size_text!r} is not a decimal below 2**64")
        root = decode_base64(root64, "the checkpoint's root hash")
        if len(root) != 32:
            raise ProofError("the checkpoint's root hash is not 32 bytes")
        return cls(origin, int(size_text), root)


def _answer(status: int, text: str) -> Answer:
    return Answer(status, "text/plain; charset=utf-8", text + "\n")


def _parse_request(data: bytes) -> tuple[int, list[bytes], str] | Answer:
    """(old size, proof, note text), or a 400 answer."""
    if len(data) > MAX_BODY:
        return _answer(400, "request body too large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _answer(400, "the body is not UTF-8")
    head, blank, note = text.partition("\n\n")
    if not blank:
        return _answer(400, "no empty line between the proof and the checkpoint")
    lines = head.split("\n")
    old_line = lines[0]
    if not old_line.startswith("old ") or not _DECIMAL.fullmatch(old_line[4:]):
        return _answer(400, "line 1: expected 'old <size>' (decimal, no leading zeros)")
    if len(lines) - 1 > MAX_PROOF_LINES:
        return _answer(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            value = decode_base64(line, f"line {number}")
        except ProofError as e:
            return _answer(400, str(e))
        if len(value) != 32:
            return _answer(400, f"line {number}: a proof hash is 32 bytes")
        proof.append(value)
    return int(old_line[4:]), proof, note


class Witness:
    """A witness for the configured logs, keeping its state in `state_dir` (see module doc)."""

    def __init__(
        self,
        logs: dict[str, list[Verifier]],
        signer: Cosigner,
        state_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not logs:
            raise UsageError("a witness needs at least one --log ORIGIN=KEY")
        self.logs = logs
        self.signer = signer
        self.state_dir = state_dir
        self.clock = clock
        self._lock = threading.Lock()
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lockfile = os.open(state_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lockfile)
            raise UsageError(f"another witness is using {state_dir}") from None

    def close(self) -> None:
        os.close(self._lockfile)

    def checkpoint_file(self, origin: str) -> Path:
        """Where the latest checkpoint cosigned for `origin` is kept."""
        return self.state_dir / (hashlib.sha256(origin.encode()).hexdigest() + ".checkpoint")

    def latest(self, origin: str) -> str | None:
        """The latest checkpoint note cosigned for `origin` (log signatures and ours), if any."""
        try:
            return self.checkpoint_file(origin).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _store(self, origin: str, note: str) -> None:
        path = self.checkpoint_file(origin)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, note.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def add_checkpoint(self, data: bytes) -> Answer:
        """Handle one add-checkpoint request body (see the module docstring)."""
        parsed = _parse_request(data)
        if isinstance(parsed, Answer):
            return parsed
        old, proof, note = parsed
        try:
            signed = parse_note(note)
            checkpoint = LogCheckpoint.parse(signed.body)
        except ProofError as e:
            return _answer(400, f"malformed checkpoint: {e}")
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            return _answer(404, f"unknown log origin {checkpoint.origin!r}")
        try:
            open_note(note, keys)
        except ProofError as e:
            return _answer(403, str(e))
        if old > checkpoint.size:
            return _answer(400, f"old size {old} is above the checkpoint's size")
        with self._lock:
            latest = self.latest(checkpoint.origin)
            known = LogCheckpoint.parse(parse_note(latest).body) if latest else None
            known_size = known.size if known else 0
            if old != known_size:
                return Answer(409, SIZE_CONTENT_TYPE, f"{known_size}\n")
            problem = self._inconsistency(known, old, proof, checkpoint)
            if problem:
                return _answer(422, problem)
            timestamp = max(1, int(self.clock()))
            line = self.signer.cosign(signed.body, timestamp)
            known_keys = {(k.name, k.key_id) for k in keys}
            verified = [s for s in signed.signatures if (s.name, s.key_id) in known_keys]
            self._store(checkpoint.origin, Note(signed.body, tuple(verified)).text() + line)
        return Answer(200, "text/plain; charset=utf-8", line)

    @staticmethod
    def _inconsistency(
        known: LogCheckpoint | None, old: int, proof: list[bytes], new: LogCheckpoint
    ) -> str | None:
        if new.size == 0 and new.root != EMPTY_ROOT:
            return "a checkpoint of size 0 must have the empty tree's root"
        if old == 0:
            return "a proof from size 0 must be empty" if proof else None
        assert known is not None
        if old == new.size and known.root != new.root:
            return f"a different root for the size {old} this witness cosigned: a fork"
        try:
            check_consistency(old, new.size, proof, known.root, new.root)
        except ProofError as e:
            return f"not consistent with the checkpoint of size {old} this witness cosigned: {e}"
        return None


# ----------------------------------------------------------------------------- the log's side


@dataclass(frozen=True, slots=True)
class WitnessEndpoint:
    """A witness the log asks: its submission URL prefix and public key."""

    url: str
    key: CosignerKey

    @classmethod
    def parse(cls, text: str) -> WitnessEndpoint:
        """``URL=KEY``: the witness's URL prefix and its vkey (or a file holding it)."""
        url, sep, key = text.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise UsageError(f"--witness {text!r}: expected URL=KEY (KEY: a vkey or a .pub file)")
        if os.path.isfile(key):
            key = Path(key).read_text(encoding="utf-8").strip()
        return cls(url.rstrip("/"), CosignerKey.parse(key))


class QuorumError(LedgerError):
    """Fewer witnesses cosigned than the quorum: nothing was published."""


def add_checkpoint_body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    """The body of an add-checkpoint request."""
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


def request_cosignatures(
    note: str,
    size: int,
    witnesses: Sequence[WitnessEndpoint],
    consistency_proof: Callable[[int, int], list[bytes]],
    last_sizes: dict[str, int],
    *,
    timeout: float = 10.0,
) -> tuple[list[str], dict[str, str]]:
    """Ask each witness to cosign `note` (a signed checkpoint of `size`); returns the valid
    cosignature lines and, per witness that did not cosign, why.

    `last_sizes` (by witness key name, updated in place) holds the size each witness last
    cosigned; a 409 teaches it, and the request is retried once from that size.
    """
    import httpx  # noqa: PLC0415  only the log side that talks to witnesses needs it

    lines: list[str] = []
    refused: dict[str, str] = {}
    with httpx.Client(timeout=timeout) as client:
        for witness in witnesses:
            name = witness.key.name
            old = last_sizes.get(name, 0)
            for _attempt in range(2):
                if old > size:
                    refused[name] = f"it cosigned size {old}, above this log's {size}: rollback?"
                    break
                proof = consistency_proof(old, size) if 0 < old < size else []
                try:
                    response = client.post(
                        f"{witness.url}/add-checkpoint",
                        content=add_checkpoint_body(old, proof, note),
                    )
                except httpx.HTTPError as e:
                    refused[name] = f"unreachable ({e})"
                    break
                if response.status_code == 409 and _DECIMAL.fullmatch(response.text.strip()):
                    old = int(response.text.strip())
                    last_sizes[name] = old
                    refused[name] = f"409: it has size {old}"
                    continue
                if response.status_code != 200:
                    refused[name] = f"{response.status_code}: {response.text.strip()[:200]}"
                    break
                try:
                    found = cosigned_by(note + response.text, [witness.key])
                except ProofError as e:
                    refused[name] = f"a bad cosignature: {e}"
                    break
                if not found:
                    refused[name] = "its answer holds no cosignature by its key"
                    break
                lines.append(found[0].line)
                last_sizes[name] = size
                refused.pop(name, None)
                break
    return lines, refused


WITNESS_SIZE_KEY: Final = "witness_size/"
"""Ledger setting prefix: the size each witness (by key name and ID) last cosigned."""


def publish_checkpoint(
    ledger: Ledger, note: str, size: int, witnesses: Sequence[WitnessEndpoint], quorum: int
) -> str:
    """`note` (the signed checkpoint of `size`) with the cosignatures of `witnesses`, if at
    least `quorum` of them cosigned it; `QuorumError` naming each refusal otherwise.

    The size each witness last cosigned is kept in the ledger's settings (a 409 corrects it).
    """
    if not 1 <= quorum <= len(witnesses):
        raise UsageError(f"--quorum {quorum} must be from 1 to the {len(witnesses)} witness(es)")
    if "\n\n" not in note:
        raise UsageError("witnesses cosign only signed checkpoints: give the log's key (--key)")
    keys = {w.key.name: f"{WITNESS_SIZE_KEY}{w.key.name}+{w.key.key_id:08x}" for w in witnesses}
    last: dict[str, int] = {}
    for name, key in keys.items():
        value = ledger.backend.get_meta(key)
        if value is not None:
            last[name] = int(value)
    lines, refused = request_cosignatures(note, size, witnesses, ledger.consistency_proof, last)
    for name, key in keys.items():
        if name in last:
            ledger.backend.put_meta(key, str(last[name]).encode())
    if len(lines) < quorum:
        why = "; ".join(f"{name}: {reason}" for name, reason in refused.items())
        raise QuorumError(
            f"only {len(lines)} of {len(witnesses)} witness(es) cosigned the checkpoint of size "
            f"{size}, fewer than the quorum of {quorum}; nothing was published ({why})"
        )
    return add_cosignatures(note, lines)
