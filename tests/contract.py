"""Contract test cases for the backend seam, to subclass once per backend (as eventsourcing ships
`ApplicationRecorderTestCase` and friends in ``eventsourcing/tests/persistence.py``).

- `LogBackendContract`: what every `ledger.backend.LogBackend` must do (SPEC §4, §6): gap-free
  positions, atomic requests, idempotency by id, the Merkle leaves and nodes of what it stores,
  settings, checkpoints, reopening from `location`, and `LedgerError` for every failure, a
  closed backend's included.
- `ViewStoreContract`: what every `projections.views.ViewStore` must do: fold in chunks with the
  tracking position in the same transaction, equal to a replay; read through a write (`over`);
  reset.

A subclass gives `target` (a pytest fixture: where a fresh ledger lives) and `open_backend`.
The bases are not collected (their names do not start with ``Test``); see
`tests/test_contract_lmdb.py` and `tests/test_contract_postgres.py`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from ledger import merkle
from ledger.backend import AppendRequest, LogBackend, TxnOps, positions_of_subjects
from ledger.codec import decode_record, leaf_hashes
from ledger.errors import LedgerError, StrictRefusedError
from ledger.events import (
    BackendCrashed,
    EnterMaintenance,
    Event,
    ExitMaintenance,
    KeepAliveFailed,
    MaintenanceObserved,
    SetPolicy,
)
from ledger.ledger import Ledger
from projections.api import open_store
from projections.base import Verdict
from projections.state import Folder, decode_state
from projections.views import ViewStore, ViewTxn, strict_precondition

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def events(tag: str, n: int, subject: str = "r1") -> list[Event]:
    return [KeepAliveFailed(subject=subject, id=f"{tag}-{i}", at=T0) for i in range(n)]


def request(batch: Sequence[Event], precondition: object = None) -> AppendRequest:
    return AppendRequest(batch, T0, precondition)  # type: ignore[arg-type]


def refuse(ops: TxnOps, batch: Sequence[Event]) -> None:
    raise StrictRefusedError("refused by the test")


def explode(ops: TxnOps, batch: Sequence[Event]) -> None:
    raise RuntimeError("not a LedgerError: the whole transaction aborts")


class LogBackendContract(ABC):
    """Every `LogBackend` (subclass per backend; see the module docstring)."""

    @abstractmethod
    def open_backend(self, target: str) -> LogBackend:
        """Open (creating if needed) the backend at `target`."""

    @pytest.fixture
    def backend(self, target: str) -> Iterator[LogBackend]:
        backend = self.open_backend(target)
        yield backend
        backend.close()

    def test_a_fresh_log_is_empty(self, backend: LogBackend) -> None:
        assert backend.size() == 0
        assert list(backend.read_stored(1)) == []
        assert list(backend.read_leaves(1)) == []
        assert backend.checkpoints() == []
        assert merkle.root(backend.read_nodes(), 0) == merkle.EMPTY_ROOT

    def test_positions_are_gap_free_in_commit_order(self, backend: LogBackend) -> None:
        first, second = request(events("a", 3)), request(events("b", 2))
        backend.write([first])
        backend.write([second])
        assert [a.position for a in first.result or []] == [1, 2, 3]
        assert [a.position for a in second.result or []] == [4, 5]
        assert backend.size() == 5
        stored = list(backend.read_stored(1))
        assert [p for p, _ in stored] == [1, 2, 3, 4, 5]
        assert [decode_record(s).event.id for _, s in stored] == [
            *(f"a-{i}" for i in range(3)),
            *(f"b-{i}" for i in range(2)),
        ]
        assert [p for p, _ in backend.read_stored(2, 3)] == [2, 3]
        assert list(backend.read_stored(6)) == []

    def test_a_repeated_id_is_a_duplicate_at_its_original_position(
        self, backend: LogBackend
    ) -> None:
        backend.write([request(events("a", 2))])
        again = request([*events("a", 2)[1:], *events("c", 1)])
        backend.write([again])
        assert [(a.position, a.duplicate) for a in again.result or []] == [(2, True), (3, False)]
        same_batch = request([*events("d", 1), *events("d", 1)])
        backend.write([same_batch])
        assert [(a.position, a.duplicate) for a in same_batch.result or []] == [
            (4, False),
            (4, True),
        ]
        assert backend.size() == 4

    def test_a_refused_request_writes_nothing_and_the_others_commit(
        self, backend: LogBackend
    ) -> None:
        ok, refused, after = (
            request(events("a", 1)),
            request(events("b", 2), refuse),
            request(events("c", 1)),
        )
        backend.write([ok, refused, after])
        assert isinstance(refused.error, StrictRefusedError)
        assert refused.result is None
        assert [a.position for a in after.result or []] == [2]
        assert backend.size() == 2

    def test_any_other_failure_aborts_the_whole_transaction(self, backend: LogBackend) -> None:
        with pytest.raises(RuntimeError):
            backend.write([request(events("a", 2)), request(events("b", 1), explode)])
        assert backend.size() == 0
        assert list(backend.read_leaves(1)) == []

    def test_a_precondition_sees_the_requests_before_its_own(self, backend: LogBackend) -> None:
        seen: list[int] = []

        def count(ops: TxnOps, batch: Sequence[Event]) -> None:
            seen.append(ops.size())
            seen.append(len(list(ops.read_stored(1, ops.size()))))

        backend.write([request(events("a", 3)), request(events("b", 1), count)])
        assert seen == [3, 3]

    def test_positions_of_a_subject_ascend(self, backend: LogBackend) -> None:
        backend.write([request([*events("a", 2, "r1"), *events("b", 1, "r2"), *events("c", 1)])])
        assert backend.positions_of("r1") == [1, 2, 4]
        assert backend.positions_of("r2") == [3]
        assert backend.positions_of("nobody") == []
        assert backend.positions_of("r1", skip=1) == [2, 4]
        assert backend.positions_of("r1", skip=3) == []

    def test_positions_of_many_subjects_at_once_equal_one_by_one(
        self, backend: LogBackend
    ) -> None:
        backend.write([request([*events("a", 2, "r1"), *events("b", 1, "r2"), *events("c", 1)])])
        wanted = {"r1": 1, "r2": 0, "nobody": 0, "r1\nr2": 0}
        expected = {"r1": [2, 4], "r2": [3], "nobody": [], "r1\nr2": []}
        assert positions_of_subjects(backend, wanted) == expected
        with backend.read_snapshot() as snapshot:
            assert positions_of_subjects(snapshot, wanted) == expected
        assert positions_of_subjects(backend, {}) == {}

    def test_the_tree_holds_the_leaf_of_every_stored_event(self, backend: LogBackend) -> None:
        for tag in "abc":
            backend.write([request(events(tag, 5))])
        stored = list(backend.read_stored(1))
        leaves = list(backend.read_leaves(1))
        assert [p for p, _ in leaves] == list(range(1, 16))
        assert [h for _, h in leaves] == leaf_hashes(stored)
        assert list(backend.read_leaves(14)) == leaves[13:]
        frontier = merkle.Frontier()
        for _, leaf in leaves[:7]:
            frontier.append(leaf)
        assert merkle.root(backend.read_nodes(), 7) == frontier.root()

    def test_settings_are_kept_and_the_layout_setting_is_the_backends(
        self, backend: LogBackend
    ) -> None:
        assert backend.get_meta("origin") is None
        backend.put_meta("origin", b"one", replace=False)
        backend.put_meta("origin", b"two", replace=False)
        assert backend.get_meta("origin") == b"one"
        backend.put_meta("origin", b"three")
        assert backend.get_meta("origin") == b"three"
        with pytest.raises(LedgerError, match="belongs to the backend"):
            backend.put_meta("format", b"anything")

    def test_checkpoints_by_ascending_size_one_per_size(self, backend: LogBackend) -> None:
        backend.put_checkpoint(5, "five\n")
        backend.put_checkpoint(2, "two\n")
        backend.put_checkpoint(5, "five again\n")
        assert backend.checkpoints() == [(2, "two\n"), (5, "five again\n")]

    def test_wait_beyond_answers_whether_the_log_grew(self, backend: LogBackend) -> None:
        assert backend.wait_beyond(0, 0.01) is False
        backend.write([request(events("a", 1))])
        assert backend.wait_beyond(0, 5.0) is True
        writer = threading.Timer(0.05, lambda: backend.write([request(events("b", 1))]))
        writer.start()
        try:
            assert backend.wait_beyond(1, 30.0) is True
        finally:
            writer.join()

    def test_location_opens_the_same_ledger_again(self, target: str) -> None:
        backend = self.open_backend(target)
        try:
            backend.write([request(events("a", 2))])
            location = backend.location
        finally:
            backend.close()
        again = self.open_backend(location)
        try:
            assert again.size() == 2
        finally:
            again.close()

    def test_a_closed_backend_raises_ledger_errors(self, target: str) -> None:
        backend = self.open_backend(target)
        backend.write([request(events("a", 1))])
        backend.close()
        calls: dict[str, Callable[[], object]] = {
            "size": backend.size,
            "get_meta": lambda: backend.get_meta("origin"),
            "put_meta": lambda: backend.put_meta("origin", b"x"),
            "put_checkpoint": lambda: backend.put_checkpoint(1, "one\n"),
            "checkpoints": backend.checkpoints,
            "read_stored": lambda: list(backend.read_stored(1)),
            "positions_of": lambda: backend.positions_of("r1"),
            "write": lambda: backend.write([request(events("b", 1))]),
        }
        for name, call in calls.items():
            with pytest.raises(LedgerError):
                call()
            assert name  # the loop names the call in the traceback

    def test_the_backend_has_a_view_store(self, backend: LogBackend) -> None:
        store = open_store(Ledger(backend))
        with snapshot(store) as reader:
            assert reader.tracking() == 0


@contextmanager
def snapshot(store: ViewStore) -> Iterator[ViewTxn]:
    """`store.reader()` (a generator) as a context manager, as `Views.reader` uses it."""
    yield from store.reader()


OPERATOR = "alice"
HISTORY: list[Event] = [
    SetPolicy(subject="*", actor=OPERATOR, keepalive_failure_threshold=2, id="p1", at=T0),
    EnterMaintenance(subject="n1", actor=OPERATOR, id="m1", at=T0),
    MaintenanceObserved(subject="n1", state="DrainFailed", reason="pods", id="m2", at=T0),
    *events("k", 3),
    BackendCrashed(subject="b1", id="c1", at=T0),
    BackendCrashed(subject="b1", id="c2", at=T0),
]


class ViewStoreContract(ABC):
    """Every `ViewStore`: the stored views beside a backend's log."""

    @abstractmethod
    def open_backend(self, target: str) -> LogBackend:
        """Open (creating if needed) the backend at `target`."""

    @pytest.fixture
    def ledger(self, target: str) -> Iterator[Ledger]:
        log = Ledger(self.open_backend(target))
        log.append_batch(HISTORY)
        yield log
        log.close()

    @pytest.fixture
    def store(self, ledger: Ledger) -> ViewStore:
        return open_store(ledger)

    def _states(self, store: ViewStore) -> dict[str, dict[str, object]]:
        with snapshot(store) as reader:
            return {
                name: {s: decode_state(name, d) for s, d in reader.scan(name)}
                for name in Folder().states
            }

    def test_fresh_views_have_folded_nothing(self, store: ViewStore) -> None:
        with snapshot(store) as reader:
            assert reader.tracking() == 0
            assert list(reader.scan("maintenance")) == []
            assert reader.size() == len(HISTORY)

    def test_positions_are_the_tracking_and_the_size_in_one_read(
        self, ledger: Ledger, store: ViewStore
    ) -> None:
        n = len(HISTORY)
        assert store.positions() == (0, n)
        store.catch_up_chunk(3)
        assert store.positions() == (3, n)
        ledger.append_batch(events("y", 2))
        assert store.positions() == (3, n + 2)
        store.catch_up_chunk(100)
        assert store.positions() == (n + 2, n + 2)

    def test_chunks_fold_with_their_tracking_to_what_a_replay_gives(self, store: ViewStore) -> None:
        n = len(HISTORY)
        found: dict[int, list[Verdict]] = {}  # verdicts are not stored: a fold hands them back
        steps = [store.catch_up_chunk(3, None, None, found) for _ in range(4)]
        assert steps == [(3, n), (6, n), (8, n), (8, n)]
        assert self._states(store) == Folder().apply_all(HISTORY).states
        folder = Folder()
        assert found == {position: folder.apply(e) for position, e in enumerate(HISTORY, 1)}
        with snapshot(store) as reader:
            assert reader.tracking() == n

    def test_a_write_reads_the_views_and_the_unfolded_log(
        self, ledger: Ledger, store: ViewStore
    ) -> None:
        store.catch_up_chunk(2)
        seen: list[tuple[int, int]] = []

        def look(ops: TxnOps, batch: Sequence[Event]) -> None:
            view = store.over(ops)
            seen.append((view.tracking(), ops.size()))

        ledger.append_batch(events("z", 1), precondition=look)
        assert seen == [(2, len(HISTORY))]

    def test_a_strict_write_refuses_what_the_views_would_reject(
        self, ledger: Ledger, store: ViewStore
    ) -> None:
        store.catch_up_chunk(4)  # n1 is DrainFailed, partly folded
        check = strict_precondition(store.over)
        with pytest.raises(StrictRefusedError, match="needs_force"):
            ledger.append_batch([ExitMaintenance(subject="n1", actor=OPERATOR)], precondition=check)
        assert ledger.size() == len(HISTORY)

    def test_reset_drops_everything_and_a_catch_up_restores_it(self, store: ViewStore) -> None:
        store.catch_up_chunk(100)
        before = self._states(store)
        store.reset()
        with snapshot(store) as reader:
            assert reader.tracking() == 0
        assert all(not table for table in self._states(store).values())
        store.catch_up_chunk(100)
        assert self._states(store) == before
