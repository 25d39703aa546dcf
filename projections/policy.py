"""Policy projection (SPEC §2.6): tuning settings for all subjects (``*``) or one subject.

The state per subject is the *settings* made so far: each `SetPolicy` overrides the fields it
gives and keeps the others. It is ``applied`` when it changes a setting, else ``idempotent``.

The effective policy for a subject (`effective`) is, field by field: the default, overridden by
the ``*`` settings, overridden by that subject's own settings. A subject's own setting wins over
``*`` whatever their order in the log (more specific beats more general). Zero durations mean
1 ms. Replay honours each policy at its position because the folder hands each fold the policy
in force at that event.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any, Final, TypeAlias

import msgspec

from ledger.events import Event, SetPolicy
from projections.base import DEFAULT_POLICY, Fold, Policy, Verdict, verdicts

__all__ = [
    "ALL",
    "FOLDS",
    "HANDLES",
    "NAME",
    "STATE",
    "PolicySettings",
    "combine",
    "effective",
    "fold",
    "view",
]

NAME: Final = "policy"
ALL: Final = "*"


class PolicySettings(msgspec.Struct, frozen=True, omit_defaults=True, cache_hash=True):
    """The policy fields set for one subject (or ``*``); ``None`` = not set here."""

    recover_window_ms: int | None = None
    keepalive_failure_threshold: int | None = None
    retry_backoff_ms: int | None = None
    budget_window_ms: int | None = None


STATE: Final = PolicySettings

_APPLIED, _IDEMPOTENT = verdicts(NAME)

Result: TypeAlias = tuple[PolicySettings | None, Verdict]


def _set(state: PolicySettings | None, event: SetPolicy, policy: Policy) -> Result:
    old = PolicySettings() if state is None else state
    new = PolicySettings(
        old.recover_window_ms if event.recover_window_ms is None else event.recover_window_ms,
        (
            old.keepalive_failure_threshold
            if event.keepalive_failure_threshold is None
            else event.keepalive_failure_threshold
        ),
        old.retry_backoff_ms if event.retry_backoff_ms is None else event.retry_backoff_ms,
        old.budget_window_ms if event.budget_window_ms is None else event.budget_window_ms,
    )
    if new == old:
        return state, _IDEMPOTENT
    return new, _APPLIED


FOLDS: Final[dict[type[Event], Fold]] = {SetPolicy: _set}
"""The fold of each event type this projection handles."""

HANDLES: Final[tuple[type[Event], ...]] = tuple(FOLDS)


def fold(state: PolicySettings | None, event: Event, policy: Policy) -> Result:
    """Merge a `SetPolicy` into the subject's settings. `policy` is unused."""
    return FOLDS[type(event)](state, event, policy)


def _pick(specific: int | None, general: int | None, default: int) -> int:
    if specific is not None:
        return specific
    return default if general is None else general


@lru_cache(maxsize=1024)
def combine(star: PolicySettings | None, own: PolicySettings | None) -> Policy:
    """The effective policy from the ``*`` settings and a subject's own (memoised: pure)."""
    if star is None and own is None:
        return DEFAULT_POLICY
    s = PolicySettings() if star is None else star
    o = PolicySettings() if own is None else own
    d = DEFAULT_POLICY
    return Policy(
        max(1, _pick(o.recover_window_ms, s.recover_window_ms, d.recover_window_ms)),
        max(
            1,
            _pick(
                o.keepalive_failure_threshold,
                s.keepalive_failure_threshold,
                d.keepalive_failure_threshold,
            ),
        ),
        max(1, _pick(o.retry_backoff_ms, s.retry_backoff_ms, d.retry_backoff_ms)),
        max(1, _pick(o.budget_window_ms, s.budget_window_ms, d.budget_window_ms)),
    )


def effective(policies: Mapping[str, PolicySettings], subject: str) -> Policy:
    """The policy in force for `subject`: defaults <- ``*`` <- the subject's own settings."""
    return combine(policies.get(ALL), None if subject == ALL else policies.get(subject))


def view(subject: str, state: PolicySettings | None, now: datetime | None) -> dict[str, Any]:
    """The settings made for `subject` itself (``null`` = not set there; see `effective`)."""
    settings = PolicySettings() if state is None else state
    return {
        "recover_window_ms": settings.recover_window_ms,
        "keepalive_failure_threshold": settings.keepalive_failure_threshold,
        "retry_backoff_ms": settings.retry_backoff_ms,
        "budget_window_ms": settings.budget_window_ms,
    }
