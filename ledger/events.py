"""The event catalogue (SPEC §1): every event adminchain records, as frozen msgspec structs.

One tagged union, `Event`, keyed by the ``type`` field. The envelope fields (`subject`, `id`,
`at`, `actor`, `signature`) are on every event; operator events require `actor`. Validation
lives in the types themselves (lengths, patterns, enums, time zones) so that the wire codec
(`ledger.codec`) gets precise, located errors from msgspec for free.

Schema evolution: add fields with defaults only, never rename or reorder; the storage record
carries a schema version (`ledger.codec.SCHEMA_VERSION`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal, TypeAlias

import msgspec

__all__ = [
    "LOOP_EVENTS",
    "MAINTENANCE_STATES",
    "OPERATOR_EVENTS",
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
    "SetPolicy",
    "Signature",
    "StorageFailed",
    "Target",
    "event_types",
]

_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"

Subject: TypeAlias = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        pattern=_NO_CONTROL,
        description="1-256 characters, no control characters",
    ),
]
EventId: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Actor: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=_NO_CONTROL)]
Text: TypeAlias = Annotated[str, msgspec.Meta(max_length=4096)]
Time: TypeAlias = Annotated[datetime, msgspec.Meta(tz=True)]
Millis: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Count: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=2**31)]

MaintenanceStateName: TypeAlias = Literal[
    "Active",
    "EnteringMaintenance",
    "Maintenance",
    "ExitingMaintenance",
    "DrainFailed",
    "Recovery",
]
MAINTENANCE_STATES: Final[tuple[str, ...]] = (
    "Active",
    "EnteringMaintenance",
    "Maintenance",
    "ExitingMaintenance",
    "DrainFailed",
    "Recovery",
)


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An Ed25519 signature over the event's canonical bytes (`ledger.signing`)."""

    key: Actor
    sig: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


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

    path_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


Operation: TypeAlias = Quiesce | ReleaseHandles


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One backend a broadcast is sent to; dead targets are skipped at once."""

    backend: Subject
    live: bool = True


class IssueBroadcast(_OperatorEvent, frozen=True, kw_only=True, tag=True):
    """An operator issues a lifecycle broadcast to a set of backends."""

    operation: Operation
    targets: Annotated[list[Target], msgspec.Meta(max_length=100_000)]
    ack_timeout_ms: Millis = 5000


# ---------------------------------------------------------------- loop events


class MaintenanceObserved(_Envelope, frozen=True, kw_only=True, tag=True):
    """A loop observed a node's maintenance state (e.g. drained, or drain failed)."""

    state: MaintenanceStateName
    reason: Text | None = None
    deadline: Time | None = None

    def __post_init__(self) -> None:
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

    peers: Annotated[list[Subject], msgspec.Meta(max_length=100_000)]


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
)
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
