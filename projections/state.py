"""All projections together: the one fold that replay, as-of queries and the stored views share.

`Folder` keeps every state in memory and folds events into it (`Folder.apply`: replay's hot
path). Each event type is routed, once at import, straight to the fold each projection module
has for it (the modules' ``FOLDS``); `touched` names the states a fold reads, so that the stored
views fold the same way over just those states. `digest` is the SHA-256 of all states (SPEC §4,
the checkpoint's projection digest).

Policy is itself a projection, folded first. For the event types a module lists in its
``READS_POLICY`` (detachment's keep-alive and health signals, recovery's crashes), the policy in
force is read from the policy states (``"*"`` and the subject's own) at that event's position, so
replay honours each `SetPolicy` where it stands in the log; every other fold gets the defaults
(it ignores them), and so does every fold while no `SetPolicy` has been folded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, NamedTuple, Protocol, TypeAlias

import msgspec

from ledger.events import Event, event_types
from projections import broadcasts, detachment, maintenance, membership, policy, recovery
from projections.base import DEFAULT_POLICY, Fold, Policy, Verdict

__all__ = [
    "BY_NAME",
    "KINDS",
    "PROJECTIONS",
    "SHARED_KEYS",
    "Folder",
    "Projection",
    "decode_state",
    "digest",
    "encode_state",
    "policy_for",
    "shared",
    "shares",
    "touched",
]


class Projection(Protocol):
    """What a projection module exports (`projections.maintenance` and its siblings)."""

    @property
    def NAME(self) -> str: ...  # noqa: N802  module constants are upper case

    @property
    def HANDLES(self) -> tuple[type[Event], ...]: ...  # noqa: N802  module constant

    @property
    def FOLDS(self) -> Mapping[type[Event], Fold]: ...  # noqa: N802  module constant

    @property
    def STATE(self) -> type[Any]: ...  # noqa: N802  module constant

    def fold(self, state: Any, event: Event, policy: Policy, /) -> tuple[Any, Verdict]: ...

    def view(self, subject: str, state: Any, now: datetime | None, /) -> dict[str, Any]: ...


PROJECTIONS: Final[tuple[Projection, ...]] = (
    policy,
    maintenance,
    detachment,
    recovery,
    membership,
    broadcasts,
)
"""Every projection, in folding order: policy first (it tunes the others)."""

BY_NAME: Final[dict[str, Projection]] = {p.NAME: p for p in PROJECTIONS}
"""Every projection module by its name."""

KINDS: Final[tuple[str, ...]] = tuple(name for name in BY_NAME if name != policy.NAME)
"""The projections ``status`` shows, in its order (SPEC §5.3): all but the policy settings."""

Getter: TypeAlias = Callable[[str, str], Any | None]


class _Route(NamedTuple):
    """One projection's fold for one event type, and whether that fold reads the policy."""

    projection: str
    fold: Fold
    reads_policy: bool


def _routes() -> dict[type[Any], tuple[_Route, ...]]:
    routes: dict[type[Any], list[_Route]] = {}
    for projection in PROJECTIONS:
        reads_policy: frozenset[type[Event]] = getattr(projection, "READS_POLICY", frozenset())
        for cls, fold in projection.FOLDS.items():
            routes.setdefault(cls, []).append(_Route(projection.NAME, fold, cls in reads_policy))
    return {cls: tuple(entries) for cls, entries in routes.items()}


_ROUTES: Final = _routes()


def _policy_keys(subject: str) -> list[tuple[str, str]]:
    """The policy states a fold reads for `subject` when it reads the policy (SPEC §2.6): the
    settings for all, and the subject's own."""
    if subject == policy.ALL:
        return [(policy.NAME, policy.ALL)]
    return [(policy.NAME, policy.ALL), (policy.NAME, subject)]


SHARED_KEYS: Final = frozenset(_policy_keys(policy.ALL))
"""The states the folds of every subject may read (the policy for all): the only states one
subject's events write that another subject's folds read."""


def touched(event: Event) -> list[tuple[str, str]]:
    """The (projection, subject) states that folding `event` reads: the state of each projection
    that handles it, and the policy settings in force when one of those folds reads the policy.

    This is the rule "a fold reads only its own subject and the policy" (SPEC §2), written once:
    stored views load what it names, and `shared` cuts a replay into parts by it.
    """
    routes = _ROUTES.get(type(event))
    if routes is None:
        return []
    subject = event.subject
    keys = [(route.projection, subject) for route in routes]
    if any(route.reads_policy for route in routes):
        keys += _policy_keys(subject)
    return keys


def shared(event: Event) -> bool:
    """Whether folding `event` writes a state the folds of other subjects read (`SHARED_KEYS`:
    a ``SetPolicy`` for ``*``). Such an event must be folded wherever any subject is."""
    return shares(type(event), event.subject)


def shares(kind: type[Event], subject: str) -> bool:
    """`shared` of an event of type `kind` about `subject`: it depends on nothing else, so a
    reader can tell from a stored record's header (`replay.parts.Part.folds`)."""
    return any((route.projection, subject) in SHARED_KEYS for route in _ROUTES.get(kind, ()))


def policy_for(get: Getter, subject: str) -> Policy:
    """The effective policy for `subject` from the policy states `get` returns."""
    own = None if subject == policy.ALL else get(policy.NAME, subject)
    return policy.combine(get(policy.NAME, policy.ALL), own)


_digest_encoder: Final = msgspec.msgpack.Encoder(order="deterministic")
_state_encoder: Final = msgspec.msgpack.Encoder()
_state_decoders: Final = {p.NAME: msgspec.msgpack.Decoder(p.STATE) for p in PROJECTIONS}


def encode_state(state: Any) -> bytes:
    """The msgpack bytes of one state struct, as stored views keep it."""
    return _state_encoder.encode(state)


def decode_state(projection: str, data: bytes) -> Any:
    """One state struct of `projection` back from `encode_state` bytes."""
    return _state_decoders[projection].decode(data)


def digest(states: Mapping[str, Mapping[str, Any]]) -> bytes:
    """SHA-256 over every state, canonical: sorted by (projection, subject), one msgpack array
    ``[projection, subject, state]`` per entry, map keys sorted. No entries: SHA-256 of nothing.
    """
    h = hashlib.sha256()
    encode = _digest_encoder.encode
    for name in sorted(states):
        table = states[name]
        for subject in sorted(table):
            h.update(encode((name, subject, table[subject])))
    return h.digest()


Applier: TypeAlias = Callable[[Event], list[Verdict]]
"""Folds one event (of one type) into a folder's states; returns its verdicts."""


def _bind(route: _Route, tables: dict[str, dict[str, Any]]) -> Applier:
    """`route`'s fold over `tables`: read the subject's state, fold the event with the policy in
    force (the defaults unless the fold reads it), store what the fold returns."""
    fold, table, policies = route.fold, tables[route.projection], tables[policy.NAME]
    get, reads_policy, effective = table.get, route.reads_policy, policy.effective

    def apply(event: Event) -> list[Verdict]:
        subject = event.subject
        old = get(subject)
        in_force = effective(policies, subject) if reads_policy and policies else DEFAULT_POLICY
        state, verdict = fold(old, event, in_force)
        if state is not old:
            if state is None:
                del table[subject]
            else:
                table[subject] = state
        return [verdict]

    return apply


def _chain(appliers: tuple[Applier, ...]) -> Applier:
    """Several projections' appliers for one event type, in folding order."""

    def apply(event: Event) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for applier in appliers:
            verdicts += applier(event)
        return verdicts

    return apply


def _unrouted(event: Event) -> list[Verdict]:
    return []


class Folder:
    """Every projection's current state in memory, folded event by event (`apply`).

    `appliers` maps every event type to its fold over this folder's states, with the routes bound
    once (the state tables are mutated, never replaced): ``appliers[type(event)](event)`` is
    `apply` without its dispatch, for replay's hot loops.
    """

    __slots__ = ("appliers", "states")

    def __init__(self, states: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.states: dict[str, dict[str, Any]] = {p.NAME: {} for p in PROJECTIONS}
        if states:
            for name, table in states.items():
                self.states[name].update(table)
        self.appliers: dict[type[Any], Applier] = dict.fromkeys(event_types().values(), _unrouted)
        for cls, routes in _ROUTES.items():
            bound = tuple(_bind(route, self.states) for route in routes)
            self.appliers[cls] = bound[0] if len(bound) == 1 else _chain(bound)

    def get(self, projection: str, subject: str) -> Any | None:
        """The state of `subject` in `projection` (None: default / absent)."""
        return self.states[projection].get(subject)

    def apply(self, event: Event) -> list[Verdict]:
        """Fold one event; returns its verdicts (one per projection that handles it).

        The stored views fold through here too (`projections.views`): this is the one fold.
        """
        return self.appliers.get(type(event), _unrouted)(event)

    def apply_all(self, events: Iterable[Event]) -> Folder:
        """Fold every event in order (verdicts dropped); returns self."""
        apply = self.apply
        for event in events:
            apply(event)
        return self

    def digest(self) -> bytes:
        """`digest` of all current states."""
        return digest(self.states)

    def copy(self) -> Folder:
        """An independent folder with the same states (state structs are immutable: shared)."""
        return Folder(self.states)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Folder):
            return NotImplemented
        return self.states == other.states

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable
