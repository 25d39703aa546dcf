"""Trust in the log (SPEC-server §8): which operator keys are trusted, at which position.

`TrustKey` and `RevokeKey` events (`ledger.events`) are in the log, inside the Merkle tree, like
every event. The rule, judged the same way at append, by `verify` and by `replay`:

- Before the first `TrustKey` no key is trusted and operator events need no signature.
- The first `TrustKey` may be unsigned (if it is signed, by the key it trusts).
- From then on every operator event, these two included, must be signed by a key trusted at
  its position, that is by the trust events before it (`ledger.signing.signature_problem`).
- A `RevokeKey` takes the name out of the trust set: the key signs nothing after it, what it
  signed before stays valid. A `TrustKey` for a name already trusted with another key rotates it.
- An event that breaks the rule changes nothing: a forged `TrustKey` trusts no one.

`TrustFold` is that rule as a fold over the log. The append check does not rescan the log: the
trust changes applied so far (a short list: position, name, key) are kept as a derived ledger
setting (`TRUST_HISTORY_KEY`), read and updated inside the append's own write transaction, so the
trust set at any position is a fold of that list (`trusted_keys`). `verify` and `replay` fold
the log itself and need nothing else.

A ledger whose trust policy is still the metadata setting of earlier versions (`TRUST_KEY`,
`ledger.signing.TrustPolicy`) moves it into the log the first time a version with this module
opens it (`migrate_legacy_policy`).
"""

from __future__ import annotations

import getpass
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import msgspec

from ledger.backend import TRUST_HISTORY_KEY
from ledger.errors import SignatureError, StorageError, UsageError
from ledger.events import OPERATOR_EVENTS, Event, RevokeKey, TrustKey
from ledger.ledger import TRUST_KEY
from ledger.notes import Signer, Verifier
from ledger.signing import DETAIL, OperatorKey, Problem, TrustPolicy, signature_problem

if TYPE_CHECKING:
    from ledger.backend import TxnOps
    from ledger.ledger import Ledger

__all__ = [
    "MIGRATION_KEY_NAME",
    "TrustFold",
    "TrustSet",
    "check_append",
    "migrate_legacy_policy",
    "rebuild_record",
    "record_mismatch",
    "revoke_key",
    "trust_key",
    "trusted_keys",
]

MIGRATION_KEY_NAME: Final = "adminchain-migration"
"""The one-time key that signs the migrated `TrustKey` events after the first (then revoked)."""

MIGRATED_KEY: Final = "trusted_operator_keys_migrated"
"""The ledger setting that keeps the legacy policy once it has moved into the log (a record)."""


class TrustChange(msgspec.Struct, frozen=True, array_like=True):
    """One trust event that took effect: `key` is the verifier key, or None for a revocation."""

    position: int
    name: str
    key: str | None
    actor: str | None = None


_changes_encoder = msgspec.msgpack.Encoder()
_changes_decoder = msgspec.msgpack.Decoder(list[TrustChange])


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A trusted operator key: its name, the verifier key, from which position, added by whom."""

    name: str
    key: str
    since: int
    actor: str | None


@dataclass(frozen=True, slots=True)
class TrustSet:
    """The keys trusted at a position (`as_of`), and since when signatures are required."""

    as_of: int
    required_since: int | None
    """The position of the first `TrustKey` (operator events after it must be signed), or None:
    no trust in the log yet, signatures are optional."""
    keys: tuple[TrustedKey, ...]
    revoked: tuple[tuple[str, int], ...] = ()
    """Names revoked (and not trusted again) up to `as_of`, with the position of the revocation."""

    def to_json(self) -> dict[str, object]:
        return {
            "as_of": self.as_of,
            "required_since": self.required_since,
            "keys": [
                {"name": k.name, "key": k.key, "since": k.since, "actor": k.actor}
                for k in self.keys
            ],
            "revoked": [{"name": name, "position": position} for name, position in self.revoked],
        }


def _key_problem(event: TrustKey) -> Problem | None:
    """A `TrustKey` whose key does not parse or is not named after its subject (possible only
    for an event forced into the log: the wire refuses it)."""
    try:
        verifier = Verifier.parse(event.key)
    except UsageError:
        return "bad_key"
    return None if verifier.name == event.subject else "bad_key"


_FIRST: Final[frozenset[type[Event]]] = frozenset({TrustKey})
_SIGNED: Final[frozenset[type[Event]]] = frozenset(OPERATOR_EVENTS)


class TrustFold:
    """The trust set as the log unfolds: judge each event against the keys trusted before it
    (`problem`), and apply the trust changes that pass (`step`).

    `watched` is the set of event types that need judging at this point of the log (only
    `TrustKey` until the first one, then every operator event): a hot loop tests
    ``type(event) in fold.watched`` before calling `step`.
    """

    __slots__ = ("changes", "keys", "revoked", "since", "verifiers", "watched")

    def __init__(self) -> None:
        self.keys: dict[str, TrustedKey] = {}
        self.verifiers: dict[tuple[str, int], Verifier] = {}
        self.revoked: dict[str, int] = {}
        self.since: int | None = None
        self.changes: list[TrustChange] = []
        self.watched: frozenset[type[Event]] = _FIRST

    @classmethod
    def of_changes(cls, changes: Sequence[TrustChange], upto: int | None = None) -> TrustFold:
        """The fold after the recorded `changes` (those at or before position `upto`)."""
        fold = cls()
        for change in changes:
            if upto is not None and change.position > upto:
                break
            fold._apply(change)
        return fold

    def copy(self) -> TrustFold:
        return TrustFold.of_changes(self.changes)

    def problem(self, event: Event) -> Problem | None:
        """Why `event` breaks the trust rule at this point of the log (None: it does not)."""
        cls = type(event)
        if cls not in self.watched:
            return None
        if self.since is None:  # the first TrustKey: unsigned, or signed by the key it trusts
            assert isinstance(event, TrustKey)
            problem = _key_problem(event)
            if problem is not None or event.signature is None:
                return problem
            own = Verifier.parse(event.key)
            return signature_problem(event, {(own.name, own.key_id): own})
        problem = signature_problem(event, self.verifiers)
        if problem is None and isinstance(event, TrustKey):
            return _key_problem(event)
        return problem

    def step(self, event: Event, position: int) -> Problem | None:
        """Judge `event` at `position`; a trust change that passes takes effect."""
        problem = self.problem(event)
        if problem is None and isinstance(event, TrustKey | RevokeKey):
            self.apply(event, position)
        return problem

    def apply(self, event: TrustKey | RevokeKey, position: int) -> None:
        """Let a (judged) trust event take effect at `position`."""
        if isinstance(event, TrustKey):
            self._apply(TrustChange(position, event.subject, event.key, event.actor))
        elif self.since is not None and event.subject in self.keys:
            self._apply(TrustChange(position, event.subject, None, event.actor))

    def _apply(self, change: TrustChange) -> None:
        old = self.keys.pop(change.name, None)
        if old is not None:
            verifier = Verifier.parse(old.key)
            self.verifiers.pop((verifier.name, verifier.key_id), None)
        if change.key is None:
            self.revoked[change.name] = change.position
        else:
            verifier = Verifier.parse(change.key)
            self.keys[change.name] = TrustedKey(
                change.name, change.key, change.position, change.actor
            )
            self.verifiers[(verifier.name, verifier.key_id)] = verifier
            self.revoked.pop(change.name, None)
            if self.since is None:
                self.since = change.position
                self.watched = _SIGNED
        self.changes.append(change)

    def refusal(self, event: TrustKey | RevokeKey) -> str | None:
        """Why a well-signed trust event is still refused at append (None: it is not): revoking
        a name that is not trusted, or the last trusted key (nothing could be signed after)."""
        if not isinstance(event, RevokeKey):
            return None
        if event.subject not in self.keys:
            return f"no trusted key is named {event.subject!r}"
        if len(self.keys) == 1:
            return (
                f"{event.subject!r} is the last trusted key: trust another key first (with no "
                "trusted key, no operator event could be appended again)"
            )
        return None

    def trust_set(self, as_of: int) -> TrustSet:
        return TrustSet(
            as_of,
            self.since,
            tuple(sorted(self.keys.values(), key=lambda k: k.name)),
            tuple(sorted(self.revoked.items())),
        )

    def encode(self) -> bytes:
        """The derived record kept as the `TRUST_HISTORY_KEY` setting."""
        return _changes_encoder.encode(self.changes)


def problem_detail(event: Event, position: int, problem: Problem) -> str:
    """How `verify` names an event that breaks the trust rule."""
    what = type(event).__name__ if isinstance(event, TrustKey | RevokeKey) else "operator event"
    return (
        f"the {what} at position {position} breaks the signing policy (keys trusted there, "
        f"from the log): {problem}: {DETAIL[problem]}"
    )


# ----------------------------------------------------------------------------- the record

_cache: dict[bytes, TrustFold] = {}


def _decode_changes(data: bytes) -> list[TrustChange]:
    try:
        return _changes_decoder.decode(data)
    except msgspec.DecodeError as e:
        raise StorageError(
            f"the trust record beside the log cannot be read ({e}): `adminchain trust rebuild` "
            "rewrites it from the log"
        ) from e


def _fold_of(data: bytes | None) -> TrustFold:
    """The fold after the recorded changes (shared: never mutate it; `copy` first)."""
    if not data:
        return _EMPTY
    fold = _cache.get(data)
    if fold is None:
        fold = TrustFold.of_changes(_decode_changes(data))
        if len(_cache) >= 16:
            _cache.clear()
        _cache[data] = fold
    return fold


_EMPTY: Final = TrustFold()


def _new_positions(ops: TxnOps, events: Sequence[Event]) -> list[int | None]:
    """The position each event of the batch will get (None: a repeat of a stored id, or of an
    earlier event of the batch: not stored again), as `ledger.backend` assigns them."""
    size = ops.size()
    seen: set[str] = set()
    positions: list[int | None] = []
    for event in events:
        event_id = event.id
        assert event_id is not None, "the Ledger assigns ids before appending"
        if event_id in seen or ops.lookup_id(event_id) is not None:
            positions.append(None)
            continue
        seen.add(event_id)
        size += 1
        positions.append(size)
    return positions


def check_append(
    ops: TxnOps,
    given: Sequence[Event] | Callable[[], Sequence[Event]],
    events: Sequence[Event],
) -> Callable[[], None] | None:
    """Refuse a batch with an operator event that breaks the trust rule (`SignatureError`
    naming its line, exit 2, nothing stored); runs under the write lock. `given` are the events
    as the caller gave them (judged: a signed event must carry its own `id` and `at`), or what
    makes them (called only when an event of a watched type is there: a big append's chunks
    make them again from the stored form); `events` the same as they will be stored (ids and
    times filled in).

    Returns what stores the updated trust record, to be called once every other check of the
    batch has passed (None when the batch changes no trust)."""
    fold = _fold_of(ops.get_meta(TRUST_HISTORY_KEY))
    watched = fold.watched
    if not any(type(event) in watched for event in events):  # the types `given` has
        return None
    if callable(given):
        given = given()
    changes = any(isinstance(event, TrustKey | RevokeKey) for event in given)
    positions = _new_positions(ops, events) if changes else []
    if changes:
        fold = fold.copy()
    for line, event in enumerate(given, start=1):
        problem = fold.problem(event)
        if problem is not None:
            if event.id is not None and ops.lookup_id(event.id) is not None:
                continue  # a repeat of a stored event: reported as a duplicate, not stored
            raise SignatureError(f"{problem}: {DETAIL[problem]}", line=line, field="signature")
        if changes and isinstance(event, TrustKey | RevokeKey):
            position = positions[line - 1]
            if position is None:
                continue
            refusal = fold.refusal(event)
            if refusal is not None:
                raise SignatureError(refusal, line=line, field="subject")
            fold.apply(event, position)
    if not changes:
        return None
    record = fold.encode()
    return lambda: ops.put_meta(TRUST_HISTORY_KEY, record)


def recorded_changes(ledger: Ledger) -> list[TrustChange]:
    """The trust changes recorded beside the log (the derived record)."""
    data = ledger.backend.get_meta(TRUST_HISTORY_KEY)
    return _decode_changes(data) if data else []


def record_mismatch(ledger: Ledger, from_log: Sequence[TrustChange], size: int) -> str | None:
    """Why the derived record differs from the trust changes folded from the log's first `size`
    events (None: it does not). Appends are checked against the record, so it must not."""
    recorded = [c for c in recorded_changes(ledger) if c.position <= size]
    if recorded == list(from_log):
        return None
    for mine, theirs in zip(recorded, from_log, strict=False):
        if mine != theirs:
            at = min(mine.position, theirs.position)
            break
    else:
        longer = recorded if len(recorded) > len(from_log) else from_log
        at = longer[min(len(recorded), len(from_log))].position
    return (
        f"the trust record kept beside the log (appends are checked against it) differs from "
        f"the log's trust events at position {at}: `adminchain trust rebuild` rewrites it from "
        "the log"
    )


def rebuild_record(ledger: Ledger) -> TrustSet:
    """Rewrite the derived record from the log's trust events, under the write lock (so no
    append slips in between); returns the trust set now."""
    from ledger.backend import AppendRequest  # noqa: PLC0415
    from ledger.codec import record_decoder  # noqa: PLC0415

    def fold(ops: TxnOps, events: Sequence[Event]) -> None:
        trust = TrustFold()
        for position, stored in ops.read_stored(1, ops.size()):
            try:
                event = record_decoder.decode(stored).event
            except msgspec.DecodeError as e:
                detail = f"position {position} cannot be decoded ({e}): see `adminchain verify`"
                raise StorageError(detail) from e
            if type(event) in trust.watched:
                trust.step(event, position)
        ops.put_meta(TRUST_HISTORY_KEY, trust.encode())

    request = AppendRequest([], datetime.now(UTC), fold)
    ledger.backend.write([request])
    if request.error is not None:
        raise request.error
    return trusted_keys(ledger)


def trusted_keys(ledger: Ledger, at_position: int | None = None) -> TrustSet:
    """The keys trusted at `at_position` (default: now): after the trust events up to it."""
    size = ledger.size()
    as_of = size if at_position is None else at_position
    if not 0 <= as_of <= size:
        raise UsageError(f"position {as_of} is beyond the log (it has {size} events)")
    return TrustFold.of_changes(recorded_changes(ledger), as_of).trust_set(as_of)


# ----------------------------------------------------------------------------- appending


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _operator_event(event: TrustKey | RevokeKey, signer: OperatorKey | None) -> Event:
    return event if signer is None else signer.sign(event)


def trust_key(
    ledger: Ledger,
    verifier_key: str,
    *,
    signer: OperatorKey | None = None,
    actor: str | None = None,
) -> TrustSet:
    """Append a `TrustKey` for `verifier_key` (signed by `signer`; only the ledger's first may
    be unsigned) and return the trust set after it."""
    verifier = Verifier.parse(verifier_key)  # refuse a malformed key before appending
    if signer is not None:
        actor = signer.signer.name
    event = TrustKey(subject=verifier.name, actor=actor or _login(), key=verifier.encode())
    ledger.append(_operator_event(event, signer))
    return trusted_keys(ledger)


def revoke_key(
    ledger: Ledger,
    name: str,
    *,
    signer: OperatorKey | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> TrustSet:
    """Append a `RevokeKey` for the key called `name` (signed by a trusted key) and return the
    trust set after it."""
    if signer is not None:
        actor = signer.signer.name
    event = RevokeKey(subject=name, actor=actor or _login(), reason=reason)
    ledger.append(_operator_event(event, signer))
    return trusted_keys(ledger)


# ----------------------------------------------------------------------------- migration


def migration_events(keys: Sequence[str], tag: str) -> list[Event]:
    """The trust events that put a legacy policy's `keys` into the log: one `TrustKey` per key.

    The first may be unsigned; every later one must be signed by a key trusted before it, and
    nobody holds the legacy keys' private halves here. So with several keys, the first trusts a
    one-time key made for this batch, which signs a `TrustKey` per legacy key and then its own
    `RevokeKey`; its private half is never stored. Ids are fixed by `tag` (the legacy setting's
    digest), so that two processes migrating at once store it once.
    """
    verifiers = [Verifier.parse(k) for k in keys]
    if len(verifiers) == 1:
        (only,) = verifiers
        return [
            TrustKey(subject=only.name, actor=MIGRATION_KEY_NAME, key=only.encode(), id=f"{tag}-1")
        ]
    boot = OperatorKey(Signer.generate(MIGRATION_KEY_NAME))
    first = TrustKey(
        subject=MIGRATION_KEY_NAME,
        actor=MIGRATION_KEY_NAME,
        key=boot.signer.verifier.encode(),
        id=f"{tag}-1",
    )
    events: list[Event] = [first]
    for number, verifier in enumerate(verifiers, start=2):
        event = TrustKey(
            subject=verifier.name,
            actor=MIGRATION_KEY_NAME,
            key=verifier.encode(),
            id=f"{tag}-{number}",
        )
        events.append(boot.sign(event))
    revoke = RevokeKey(
        subject=MIGRATION_KEY_NAME,
        actor=MIGRATION_KEY_NAME,
        reason="one-time key of the migration of the trust policy into the log",
        id=f"{tag}-{len(verifiers) + 2}",
    )
    events.append(boot.sign(revoke))
    return events


def legacy_check(ledger: Ledger, policy: TrustPolicy, size: int) -> str:
    """Judge the operator events the legacy policy covered (positions `policy.since` to `size`)
    by it, once, at the migration: the log's own trust starts after them, so this is the last
    time they are checked against those keys. What it found, for the migration's notice."""
    from ledger.codec import record_decoder  # noqa: PLC0415

    verifiers = {(v.name, v.key_id): v for v in (Verifier.parse(k) for k in policy.keys)}
    checked, broken = 0, []
    for position, stored in ledger.read_stored(policy.since, size):
        event = record_decoder.decode(stored).event
        if isinstance(event, OPERATOR_EVENTS):
            checked += 1
            problem = signature_problem(event, verifiers)
            if problem is not None:
                broken.append(f"{position} ({problem})")
    if not checked:
        return "it covered no operator event yet"
    if not broken:
        return (
            f"the {checked} operator event(s) it covered (positions {policy.since}-{size}) were "
            "checked against it once more: all signed by its keys"
        )
    return (
        f"of the {checked} operator event(s) it covered (positions {policy.since}-{size}), "
        f"these break it: {', '.join(broken[:10])}{' …' if len(broken) > 10 else ''} "
        "(`verify` on an earlier version names the first)"
    )


def migrate_legacy_policy(ledger: Ledger) -> str | None:
    """Move a trust policy kept as metadata (earlier versions) into the log, once; returns what
    was done, for the caller to say (None: nothing to do)."""
    data = ledger.backend.get_meta(TRUST_KEY)
    if not data:
        return None
    policy = TrustPolicy.decode(data)
    notice = None
    if policy is not None and not recorded_changes(ledger):
        tag = "trust-migration-" + hashlib.sha256(data).hexdigest()[:16]
        checked = legacy_check(ledger, policy, ledger.size())
        events = migration_events(policy.keys, tag)
        appended = ledger.append_batch(events)
        first, last = appended[0].position, appended[-1].position
        names = ", ".join(Verifier.parse(k).name for k in policy.keys)
        via = (
            f" (the first trusts a one-time key {MIGRATION_KEY_NAME!r} that signs the others and "
            "is revoked at once)"
            if len(policy.keys) > 1
            else ""
        )
        notice = (
            f"trust moved into the log: the trusted operator keys kept as a setting ({names}; "
            f"signatures required since position {policy.since}) are now TrustKey events at "
            f"positions {first}-{last}{via}; events before position {first} predate the "
            f"log's trust and are not judged by it; {checked}"
        )
    ledger.backend.put_meta(MIGRATED_KEY, data)
    ledger.backend.put_meta(TRUST_KEY, b"")
    return notice
