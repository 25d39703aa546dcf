"""Policy fold and effective-policy unit tests.

Covers SPEC §2.6 (SetPolicy for ``*`` or one subject; the four fields and their defaults; zero
durations meaning 1 ms; each policy honoured from its position in the log on, in replay too; a
subject's own setting winning over ``*`` whatever the order), and SPEC §3 verdicts for SetPolicy
(``applied``, or ``idempotent`` when it changes nothing). Also which policy states a fold reads
(`projections.state.touched`: ``("policy", "*")`` and ``("policy", subject)``).
"""

from __future__ import annotations

from typing import Any

from ledger.events import BackendCrashed, KeepAliveFailed, SetPolicy
from projections import policy
from projections.base import DEFAULT_POLICY, Policy, Verdict
from projections.policy import PolicySettings
from projections.state import Folder, touched
from tests.eventgen import ts

APPLIED = Verdict("policy", "applied")
IDEMPOTENT = Verdict("policy", "idempotent")


def set_policy(subject: str = "*", **fields: Any) -> SetPolicy:
    return SetPolicy(subject=subject, actor="ops", at=ts(0), **fields)


def fold(state: PolicySettings | None, event: SetPolicy) -> tuple[PolicySettings | None, Verdict]:
    return policy.fold(state, event, DEFAULT_POLICY)


# ---------------------------------------------------------------- the fold


def test_set_policy_records_given_fields_applied() -> None:
    state, verdict = fold(None, set_policy(recover_window_ms=100))
    assert verdict == APPLIED
    assert state == PolicySettings(recover_window_ms=100)


def test_set_policy_keeps_fields_it_does_not_give() -> None:
    state, _ = fold(None, set_policy(recover_window_ms=100, retry_backoff_ms=7))
    state, _ = fold(state, set_policy(budget_window_ms=9, retry_backoff_ms=8))
    assert state == PolicySettings(100, None, 8, 9)


def test_set_policy_changing_nothing_is_idempotent() -> None:
    state, _ = fold(None, set_policy(keepalive_failure_threshold=2))
    again, verdict = fold(state, set_policy(keepalive_failure_threshold=2))
    assert verdict == IDEMPOTENT
    assert again is state


def test_set_policy_without_fields_is_idempotent() -> None:
    assert fold(None, set_policy()) == (None, IDEMPOTENT)


# ---------------------------------------------------------------- effective policy


def test_defaults_without_settings() -> None:
    assert policy.effective({}, "r1") == Policy(500, 3, 250, 60000)
    assert policy.effective({}, "r1") == DEFAULT_POLICY


def test_star_settings_apply_to_every_subject() -> None:
    settings = {"*": PolicySettings(recover_window_ms=100)}
    assert policy.effective(settings, "r1") == Policy(recover_window_ms=100)
    assert policy.effective(settings, "*") == Policy(recover_window_ms=100)


def test_subject_setting_wins_over_star() -> None:
    settings = {
        "*": PolicySettings(recover_window_ms=100, retry_backoff_ms=5),
        "r1": PolicySettings(recover_window_ms=200),
    }
    assert policy.effective(settings, "r1") == Policy(recover_window_ms=200, retry_backoff_ms=5)
    assert policy.effective(settings, "r2") == Policy(recover_window_ms=100, retry_backoff_ms=5)


def test_subject_setting_wins_over_star_whatever_the_order() -> None:
    own, star = set_policy("r1", recover_window_ms=200), set_policy(recover_window_ms=100)
    for events in ((own, star), (star, own)):
        folder = Folder().apply_all(events)
        assert policy.effective(folder.states["policy"], "r1").recover_window_ms == 200


def test_zero_durations_mean_one_ms() -> None:
    settings = {"*": PolicySettings(0, None, 0, 0)}
    assert policy.effective(settings, "x") == Policy(1, 3, 1, 1)


def test_zero_subject_duration_overrides_star_and_is_clamped() -> None:
    settings = {"*": PolicySettings(budget_window_ms=100), "b": PolicySettings(budget_window_ms=0)}
    assert policy.effective(settings, "b").budget_window_ms == 1


# ---------------------------------------------------------------- in force at its position


def test_policy_applies_from_its_position_on_not_before() -> None:
    folder = Folder()
    folder.apply(KeepAliveFailed(subject="r1", at=ts(1)))
    folder.apply(set_policy(keepalive_failure_threshold=1))
    assert folder.states["detachment"]["r1"].detached is False
    folder.apply(KeepAliveFailed(subject="r1", at=ts(2)))
    assert folder.states["detachment"]["r1"].detached is True


def test_subject_policy_tunes_recovery_of_that_backend_only() -> None:
    folder = Folder()
    folder.apply(set_policy("svc", retry_backoff_ms=0, budget_window_ms=1000))
    for subject in ("svc", "other"):
        folder.apply(BackendCrashed(subject=subject, at=ts(0)))
        folder.apply(BackendCrashed(subject=subject, at=ts(400)))
    assert folder.states["recovery"]["svc"].decision.retry_after_ms == 600
    assert folder.states["recovery"]["other"].decision.retry_after_ms == 59_600


def test_a_keepalive_fold_reads_the_policy_for_all_and_its_own() -> None:
    assert touched(KeepAliveFailed(subject="r1", at=ts(0))) == [
        ("detachment", "r1"),
        ("policy", "*"),
        ("policy", "r1"),
    ]
    folder = Folder({"policy": {"*": PolicySettings(keepalive_failure_threshold=1)}})
    folder.apply(KeepAliveFailed(subject="r1", at=ts(0)))
    state = folder.get("detachment", "r1")
    assert state is not None
    assert state.detached


def test_set_policy_only_folds_into_policy() -> None:
    folder = Folder()
    assert folder.apply(set_policy("r1", recover_window_ms=3)) == [APPLIED]
    assert touched(set_policy("r1", recover_window_ms=3)) == [("policy", "r1")]
    assert {name for name, table in folder.states.items() if table} == {"policy"}


# ---------------------------------------------------------------- view and storage


def test_view_gives_settings_made_for_subject() -> None:
    assert policy.view("*", PolicySettings(recover_window_ms=3), None) == {
        "recover_window_ms": 3,
        "keepalive_failure_threshold": None,
        "retry_backoff_ms": None,
        "budget_window_ms": None,
    }
