"""The event catalogue (SPEC §1): every event adminchain records, as frozen msgspec structs.

One tagged union, `Event`, keyed by the ``type`` field. The envelope fields (`subject`, `id`,
`at`, `actor`, `signature`) are on every event; operator events require `actor`.

Validation is declared once, in the annotations (lengths, patterns, time zones as `WireOnly`
constraints; enums as `Literal`), but applied on the wire only. msgspec ignores `WireOnly`, so the
public classes decode without the constraint checks: that is the storage path, whose events were
validated at append and are covered by the Merkle tree. `WIRE_EVENT` is a mirror of `Event`
generated from the same annotations with the constraints turned into `msgspec.Meta`; the wire
codec (`ledger.codec`) decodes with it for precise, located errors from msgspec, then builds the
public classes. Rules msgspec cannot express go in a `_wire_post_init` method, which becomes the
mirror's ``__post_init__`` (and is not run on the public class).

Schema evolution: add fields with defaults only, never rename or reorder; the storage record
carries a schema version (`ledger.codec.SCHEMA_VERSION`).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec

__all__ = [
    "MAINTENANCE_STATES",
    "OPERATOR_EVENTS",
    "TRUST_EVENTS",
    "WIRE_EVENT",
    "WIRE_EVENT_PRINTABLE",
    "BackendCrashed",
    "BackendRecovered",
    "BroadcastAcked",
    "BroadcastFailed",
    "BroadcastTimedOut",
    "Detach",
    "EnterMaintenance",
    "Event",
    "ExitMaintenance",
    "HealthObserved",
    "IssueBroadcast",
    "KeepAliveFailed",
    "LeaseExpired",
    "MaintenanceObserved",
    "MaintenanceStateName",
    "MembershipObserved",
    "Operation",
    "Quiesce",
    "ReleaseHandles",
    "RevokeKey",
    "SetPolicy",
    "Signature",
    "StorageFailed",
    "Target",
    "TrustKey",
    "WireOnly",
    "event_types",
    "wire_type",
]


@dataclass(frozen=True, slots=True)
class WireOnly:
    """A constraint checked on the wire only: inert on the public classes (msgspec ignores
    annotations it does not know), turned into ``meta`` on their `WIRE_EVENT` mirror.
    `printable` is the same without the control-character pattern, for `WIRE_EVENT_PRINTABLE`."""

    meta: msgspec.Meta
    printable: msgspec.Meta


_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"


def _wire(**constraints: Any) -> WireOnly:
    printable = {k: v for k, v in constraints.items() if (k, v) != ("pattern", _NO_CONTROL)}
    return WireOnly(msgspec.Meta(**constraints), msgspec.Meta(**printable))


Subject: TypeAlias = Annotated[
    str,
    _wire(
        min_length=1,
        max_length=256,
        pattern=_NO_CONTROL,
        description="1-256 characters, no control characters",
    ),
]
EventId: TypeAlias = Annotated[str, _wire(min_length=1, max_length=128)]
Actor: TypeAlias = Annotated[str, _wire(min_length=1, max_length=256, pattern=_NO_CONTROL)]
Text: TypeAlias = Annotated[str, _wire(max_length=4096)]
Time: TypeAlias = Annotated[datetime, _wire(tz=True)]
Millis: TypeAlias = Annotated[int, _wire(ge=0, le=2**53)]
Count: TypeAlias = Annotated[int, _wire(ge=1, le=2**31)]

MaintenanceStateName: TypeAlias = Literal[
    "Active",
    "EnteringMaintenance",
    "Maintenance",
    "ExitingMaintenance",
    "DrainFailed",
    "Recovery",
]
MAINTENANCE_STATES: Final[tuple[str, ...]] = typing.get_args(MaintenanceStateName)
"""The maintenance state names (SPEC §2.1), in the order of `MaintenanceStateName`."""


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An Ed25519 signature over the event's canonical bytes (`ledger.signing`)."""

    key: Actor
    sig: Annotated[str, _wire(min_length=1, max_length=256)]


class _Envelope(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    subject: Subject
    id: EventId | None = None
    at: Time | None = None
    actor: Actor | None = None
    signature: Signature | None = None


class _OperatorEvent(_Envelope, frozen=True, kw_only=True):
    actor: Actor


# ---------------------------------------------------------------- operator events


class EnterMaintenance(_OperatorEvent, frozen=True, kw_only=True, tag=True):
    """An operator puts a node into maintenance (proposes EnteringMaintenance)."""

    reason: Text | None = None
    deadline: Time | None = None


class ExitMaintenance(_OperatorEvent, frozen=True, kw_only=True, tag=True):
    """An operator takes a node out of maintenance; from DrainFailed it needs `force`."""

    force: bool = False


class Detach(_OperatorEvent, frozen=True, kw_only=True, tag=True):
    """An operator detaches a runner by hand (reason `manual`)."""

    reason: Text | None = None


class SetPolicy(_OperatorEvent, frozen=True, kw_only=True, tag=True):
    """Changes tuning for one subject or for all (`*`), from this event's position on."""

    recover_window_ms: Millis | None = None
    keepalive_failure_threshold: Count | None = None
    retry_backoff_ms: Millis | None = None
    budget_window_ms: Millis | None = None


class Quiesce(
    msgspec.Struct, frozen=True, tag_field="kind", tag="quiesce", forbid_unknown_fields=True
):
    """Ask backends to stop accepting new work and drain."""

    reason: Literal["idle_timeout", "broker_shutdown", "maintenance"]


class ReleaseHandles(
    msgspec.Struct, frozen=True, tag_field="kind", tag="release_handles", forbid_unknown_fields=True
):
    """Ask backends to release file handles below a path prefix."""

    path_prefix: Annotated[str, _wire(min_length=1, max_length=4096)]


Operation: TypeAlias = Quiesce | ReleaseHandles


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One backend a broadcast is sent to; dead targets are skipped at once."""

    backend: Subject
    live: bool = True


class IssueBroadcast(_OperatorEvent, frozen=True, kw_only=True, tag=True):
    """An operator issues a lifecycle broadcast to a set of backends."""

    operation: Operation
    targets: Annotated[list[Target], _wire(max_length=100_000)]
    ack_timeout_ms: Millis = 5000


# ---------------------------------------------------------------- trust (SPEC-server §8)


class TrustKey(_OperatorEvent, frozen=True, kw_only=True, tag=True):
    """Trust an operator key from this position on (subject: the key's name); a new key for a
    name already trusted replaces the old one (rotation). Judged by `ledger.trust`."""

    key: Annotated[str, _wire(min_length=1, max_length=512)]

    def _wire_post_init(self) -> None:  # the mirror's __post_init__: wire only
        from ledger.errors import UsageError  # noqa: PLC0415
        from ledger.notes import Verifier  # noqa: PLC0415  cryptography loads only if used

        try:
            name = Verifier.parse(self.key).name
        except UsageError as e:
            msg = f"`key` is not a public key in Go note verifier format ({e})"
            raise ValueError(msg) from None
        if name != self.subject:
            msg = f"`key` is named {name!r}: the subject must be the key's name"
            raise ValueError(msg)


class RevokeKey(_OperatorEvent, frozen=True, kw_only=True, tag=True):
    """Stop trusting the operator key called `subject`: it signs nothing after this position;
    what it signed before stays valid."""

    reason: Text | None = None


# ---------------------------------------------------------------- loop events


class MaintenanceObserved(_Envelope, frozen=True, kw_only=True, tag=True):
    """A loop observed a node's maintenance state (e.g. drained, or drain failed)."""

    state: MaintenanceStateName
    reason: Text | None = None
    deadline: Time | None = None

    def _wire_post_init(self) -> None:  # the mirror's __post_init__: wire only
        if self.state == "DrainFailed" and not self.reason:
            msg = "`reason` is required when `state` is `DrainFailed`"
            raise ValueError(msg)


class StorageFailed(_Envelope, frozen=True, kw_only=True, tag=True):
    """A runner lost its storage connection (detaches with reason `storage_error`)."""

    message: Text = ""


class LeaseExpired(_Envelope, frozen=True, kw_only=True, tag=True):
    """A runner's lease expired (detaches with reason `lease_expired`)."""


class KeepAliveFailed(_Envelope, frozen=True, kw_only=True, tag=True):
    """A runner missed a keep-alive; a streak at the threshold detaches it."""


class HealthObserved(_Envelope, frozen=True, kw_only=True, tag=True):
    """A health signal for a runner: healthy ends a streak and drives re-attachment."""

    healthy: bool


class BackendCrashed(_Envelope, frozen=True, kw_only=True, tag=True):
    """A backend crashed: one retry per budget window, then refuse."""


class BackendRecovered(_Envelope, frozen=True, kw_only=True, tag=True):
    """A backend is verified healthy again: its recovery entry is cleared."""


class MembershipObserved(_Envelope, frozen=True, kw_only=True, tag=True):
    """The full current peer set of a cluster, as polled."""

    peers: Annotated[list[Subject], _wire(max_length=100_000)]


class BroadcastAcked(_Envelope, frozen=True, kw_only=True, tag=True):
    """A backend acknowledged a broadcast."""

    backend: Subject


class BroadcastTimedOut(_Envelope, frozen=True, kw_only=True, tag=True):
    """A backend did not acknowledge a broadcast before its timeout."""

    backend: Subject


class BroadcastFailed(_Envelope, frozen=True, kw_only=True, tag=True):
    """A backend rejected or failed a broadcast."""

    backend: Subject
    reason: Literal["unsupported_operation", "rejected", "backend_error"]


Event: TypeAlias = (
    EnterMaintenance
    | ExitMaintenance
    | Detach
    | SetPolicy
    | IssueBroadcast
    | TrustKey
    | RevokeKey
    | MaintenanceObserved
    | StorageFailed
    | LeaseExpired
    | KeepAliveFailed
    | HealthObserved
    | BackendCrashed
    | BackendRecovered
    | MembershipObserved
    | BroadcastAcked
    | BroadcastTimedOut
    | BroadcastFailed
)

OPERATOR_EVENTS: Final[tuple[type[Event], ...]] = (
    EnterMaintenance,
    ExitMaintenance,
    Detach,
    SetPolicy,
    IssueBroadcast,
    TrustKey,
    RevokeKey,
)
TRUST_EVENTS: Final[tuple[type[Event], ...]] = (TrustKey, RevokeKey)
"""The operator events that change which keys are trusted (SPEC-server §8, `ledger.trust`)."""
LOOP_EVENTS: Final[tuple[type[Event], ...]] = (
    MaintenanceObserved,
    StorageFailed,
    LeaseExpired,
    KeepAliveFailed,
    HealthObserved,
    BackendCrashed,
    BackendRecovered,
    MembershipObserved,
    BroadcastAcked,
    BroadcastTimedOut,
    BroadcastFailed,
)


def event_types() -> dict[str, type[Event]]:
    """Every event class by its wire `type` name."""
    return {cls.__name__: cls for cls in (*OPERATOR_EVENTS, *LOOP_EVENTS)}


# ---------------------------------------------------------------- the wire mirror

_MIRRORS: dict[tuple[type[msgspec.Struct], bool], type[msgspec.Struct]] = {}


def _mirror(cls: type[msgspec.Struct], printable: bool) -> type[msgspec.Struct]:
    """The wire twin of one struct: same name, tag, fields, order, defaults and options, with
    `WireOnly` constraints applied and `_wire_post_init` as its ``__post_init__``."""
    if (cls, printable) in _MIRRORS:
        return _MIRRORS[cls, printable]
    config = cls.__struct_config__
    fields = [
        (info.name, wire_type(info.type, printable=printable), _field_spec(info))
        for info in msgspec.structs.fields(cls)
    ]
    check = getattr(cls, "_wire_post_init", None)
    mirror = msgspec.defstruct(
        cls.__name__,
        fields,
        module=f"{__name__}.wire_printable" if printable else f"{__name__}.wire",
        namespace={"__post_init__": check} if check is not None else None,
        tag=config.tag,
        tag_field=config.tag_field,
        omit_defaults=config.omit_defaults,
        forbid_unknown_fields=config.forbid_unknown_fields,
        frozen=config.frozen,
        eq=config.eq,
        order=config.order,
        kw_only=True,  # every field keyword-only: the declared order is kept as it is
        array_like=config.array_like,
    )
    if mirror.__struct_fields__ != cls.__struct_fields__:  # pragma: no cover - a guard
        msg = f"the wire mirror of {cls.__name__} reorders its fields"
        raise TypeError(msg)
    _MIRRORS[cls, printable] = mirror
    return mirror


def _field_spec(info: msgspec.structs.FieldInfo) -> Any:
    """The field's default (or factory) and wire name, as `msgspec.defstruct` takes them."""
    name = None if info.encode_name == info.name else info.encode_name
    if info.default is not msgspec.NODEFAULT:
        return msgspec.field(default=info.default, name=name)
    if info.default_factory is not msgspec.NODEFAULT:
        return msgspec.field(default_factory=info.default_factory, name=name)
    return msgspec.field(name=name)


def wire_type(tp: Any, *, printable: bool = False) -> Any:
    """`tp` as the wire checks it: `WireOnly` constraints become `msgspec.Meta`, structs their
    mirrors. A plain `msgspec.Meta` on a public class is refused: storage would check it too.
    `printable`: without the control-character pattern (`WireOnly.printable`)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        inner: Any = tp.__origin__
        extras: tuple[Any, ...] = tp.__metadata__
        if any(isinstance(extra, msgspec.Meta) for extra in extras):
            msg = f"{tp}: declare constraints as WireOnly, not msgspec.Meta"
            raise TypeError(msg)
        metas = [
            (extra.printable if printable else extra.meta) if isinstance(extra, WireOnly) else extra
            for extra in extras
        ]
        return Annotated[(wire_type(inner, printable=printable), *metas)]
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _mirror(tp, printable)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(wire_type(arg, printable=printable) for arg in args)]  # noqa: UP007
    if origin is list:
        return list[wire_type(args[0], printable=printable)]  # type: ignore[misc]
    if origin is Literal or not args:
        return tp  # str, int, bool, datetime, None, literals: nothing to add
    msg = f"{tp}: no wire rule for this type (add one to ledger.events.wire_type)"
    raise TypeError(msg)


WIRE_EVENT: Final[Any] = wire_type(Event)
"""The constrained mirror of `Event`, for validating wire input only (`ledger.codec`)."""

WIRE_EVENT_PRINTABLE: Final[Any] = wire_type(Event, printable=True)
"""`WIRE_EVENT` without the control-character pattern (a regular expression per string, most of
the cost of a check): the wire codec uses it for lines that are printable ASCII without a
backslash, whose strings cannot hold a control character (`ledger.codec.decode_line`)."""
