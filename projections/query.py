"""Status at scale (SPEC §5): filters, a count per state, the effective policy, known defaults.

`status_report` narrows a ``status`` document (`projections.api.status_document`) the way an
operator of ten thousand nodes asks for it — by maintenance state, detached runners, overdue
deadlines, a subject glob, at most N rows — and counts what matched per state, for the summary
above each table. It works on any `StateSource` (the stored views, or a replayed folder), so a
server answers with the same call.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from ledger.errors import UsageError
from ledger.events import MAINTENANCE_STATES, Event
from projections import policy
from projections.state import BY_NAME, touched

if TYPE_CHECKING:
    from projections.api import StateSource

__all__ = [
    "StatusFilter",
    "StatusReport",
    "is_glob",
    "policy_document",
    "projections_of",
    "status_report",
]

_GLOB: Final = re.compile(r"[*?\[]")


def is_glob(text: str) -> bool:
    """Whether a SUBJECT argument is a glob (``node-*``, ``broker-?/search/*``)."""
    return _GLOB.search(text) is not None


@dataclass(frozen=True, slots=True)
class StatusFilter:
    """What ``status`` shows: every filter narrows; the maintenance ones (`states`, `overdue`)
    select the maintenance table, `detached` the detachment table, unless a KIND is given."""

    states: tuple[str, ...] = ()
    """Maintenance state names (any case), e.g. ``DrainFailed``."""
    detached: bool = False
    overdue: bool = False
    pattern: str | None = None
    """A subject glob."""
    limit: int | None = None
    """At most this many rows per projection (after filtering; the counts cover every match)."""
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_lower = {name.lower(): name for name in MAINTENANCE_STATES}
        states = []
        for name in self.states:
            if name.lower() not in by_lower:
                raise UsageError(
                    f"--state: {name!r} is not a maintenance state; "
                    f"choose one of {', '.join(MAINTENANCE_STATES)}"
                )
            states.append(by_lower[name.lower()])
        object.__setattr__(self, "states", tuple(states))
        if self.pattern is not None:
            import fnmatch  # noqa: PLC0415  only with a glob

            object.__setattr__(self, "_regex", re.compile(fnmatch.translate(self.pattern)))
        if self.limit is not None and self.limit < 0:
            raise UsageError(f"--limit: {self.limit} is negative")

    def kinds(self, kind: str | None) -> tuple[str, ...] | None:
        """The projections to show: `kind`, else those the filters are about (None: all)."""
        implied = [
            name
            for name, wanted in (
                ("maintenance", bool(self.states) or self.overdue),
                ("detachment", self.detached),
            )
            if wanted
        ]
        if kind is not None:
            wrong = [name for name in implied if name != kind]
            if wrong:
                raise UsageError(f"those filters are about {', '.join(wrong)}, not {kind}")
            return (kind,)
        return tuple(implied) or None

    def keeps(self, projection: str, subject: str, view: dict[str, Any]) -> bool:
        """Whether one row passes every filter."""
        if self._regex is not None and self._regex.match(subject) is None:
            return False
        if projection == "maintenance":
            if self.states and view["state"] not in self.states:
                return False
            if self.overdue and not view["deadline_overdue"]:
                return False
        return not (projection == "detachment" and self.detached and not view["detached"])


def state_label(projection: str, view: dict[str, Any]) -> str:
    """The state one row is counted under in the summary (``DrainFailed``, ``detached``, …)."""
    if projection == "maintenance":
        return str(view["state"])
    if projection == "detachment":
        return "detached" if view["detached"] else "attached"
    if projection == "recovery":
        decision = view["decision"]
        return "no decision" if not decision else str(decision["kind"])
    if projection == "broadcasts":
        if view["all_live_backends_acked"]:
            return "all acked"
        return "complete" if view["complete"] else "waiting"
    return "known"


@dataclass(slots=True)
class StatusReport:
    """A ``status`` document narrowed by a `StatusFilter`, and what matched before ``--limit``."""

    document: dict[str, dict[str, Any]]
    matched: dict[str, int] = field(default_factory=dict)
    """Per projection: the rows that passed the filters (the table shows at most `limit`)."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per projection: matched rows per state label (`state_label`), most common first."""


def status_report(document: dict[str, dict[str, Any]], flt: StatusFilter) -> StatusReport:
    """Narrow `document` by `flt`, counting the matches per state label."""
    report = StatusReport({})
    for name, rows in document.items():
        keeps = flt.keeps
        matched = {s: v for s, v in rows.items() if keeps(name, s, v)}
        report.matched[name] = len(matched)
        counts = Counter(state_label(name, v) for v in matched.values())
        report.counts[name] = dict(counts.most_common())
        if flt.limit is not None and len(matched) > flt.limit:
            matched = dict(list(matched.items())[: flt.limit])
        report.document[name] = matched
    return report


def projections_of(events: Iterable[Event]) -> set[str]:
    """The projections that fold at least one of `events` about their own subject."""
    names = set()
    for event in events:
        for projection, subject in touched(event):
            if subject == event.subject and projection != policy.NAME:
                names.add(projection)
    return names


def with_known_defaults(
    document: dict[str, dict[str, Any]],
    subject: str,
    folded_by: set[str],
    now: datetime | None,
) -> dict[str, dict[str, Any]]:
    """A subject with history but back in its default state (no stored state) shows that state
    in each projection that folded its events, instead of nothing."""
    for name, rows in document.items():
        if not rows and name in folded_by:
            document[name] = {subject: BY_NAME[name].view(subject, None, now)}
    return document


def policy_document(source: StateSource, subject: str | None = None) -> dict[str, Any]:
    """``status policy``: per subject with settings of its own (and ``*``, always), the
    effective policy and the settings made for it; with `subject`, that subject (and ``*``)."""
    star = source.state(policy.NAME, policy.ALL)
    if subject is None:
        owned = dict(source.subjects(policy.NAME))
        subjects = sorted(set(owned) | {policy.ALL})
    else:
        owned = {subject: source.state(policy.NAME, subject)}
        subjects = sorted({policy.ALL, subject})
    rows: dict[str, Any] = {}
    for name in subjects:
        own = star if name == policy.ALL else owned.get(name)
        effective = policy.combine(star, None if name == policy.ALL else own)
        rows[name] = {
            "effective": {f: getattr(effective, f) for f in effective.__struct_fields__},
            "own": policy.view(name, own, None),
        }
    return {"policy": rows}
