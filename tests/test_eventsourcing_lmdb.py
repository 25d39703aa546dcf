"""eventsourcing's shipped contract suites, run against `ledger.lmdb`.

Each suite is subclassed as eventsourcing's own tests do for SQLite and POPO (see
``tests/persistence_tests/test_sqlite.py`` and ``test_popo.py`` in its repository): UUID and
str originator ids, the optional subscribe test wrapped as a real test, and the abstract
bases deleted at the end so pytest does not collect them. Every test gets a fresh directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, ClassVar
from unittest import TestCase
from uuid import UUID, uuid4

import lmdb
import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.tests.application import ExampleApplicationTestCase
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.tests.projection import (
    AggregateEventCountersProjectionTestCase,
    EventCountersView,
    EventCountersViewTestCase,
    EventSourcedProjectionTestCase,
)
from eventsourcing.utils import Environment, get_topic

from ledger.lmdb import (
    LMDBAggregateRecorder,
    LMDBApplicationRecorder,
    LMDBDatastore,
    LMDBFactory,
    LMDBProcessRecorder,
    LMDBTrackingRecorder,
)


class WithLMDBDir(TestCase):
    """A fresh environment directory per test; datastores opened here are closed after."""

    def setUp(self) -> None:
        super().setUp()
        self.make_dir()

    def tearDown(self) -> None:
        self.remove_dir()
        super().tearDown()

    def make_dir(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="lmdb-test-")
        self.lmdb_path = os.path.join(self.tmpdir, "env")
        self.datastores: list[LMDBDatastore] = []

    def remove_dir(self) -> None:
        for datastore in self.datastores:
            datastore.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def datastore(self) -> LMDBDatastore:
        datastore = LMDBDatastore.open(self.lmdb_path)
        self.datastores.append(datastore)
        return datastore


class WithStrOriginatorID:
    """The str-id variant (eventsourcing's ``WithTextOriginatorID``)."""

    def new_originator_id(self) -> UUID | str:
        return "test-" + str(uuid4())


# ---------------------------------------------------------------------------- recorders


class TestLMDBAggregateRecorder(WithLMDBDir, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        recorder = LMDBAggregateRecorder(self.datastore())
        recorder.create_table()
        return recorder


class TestLMDBAggregateRecorderWithStrOriginatorID(WithStrOriginatorID, TestLMDBAggregateRecorder):
    pass


class TestLMDBApplicationRecorder(
    WithLMDBDir, ApplicationRecorderTestCase[LMDBApplicationRecorder]
):
    def create_recorder(self) -> LMDBApplicationRecorder:
        recorder = LMDBApplicationRecorder(self.datastore())
        recorder.create_table()
        return recorder

    def test_insert_subscribe(self) -> None:
        super().optional_test_insert_subscribe()


class TestLMDBApplicationRecorderWithStrOriginatorID(
    WithStrOriginatorID, TestLMDBApplicationRecorder
):
    pass


class TestLMDBTrackingRecorder(WithLMDBDir, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        recorder = LMDBTrackingRecorder(self.datastore())
        recorder.create_table()
        return recorder


class TestLMDBProcessRecorder(WithLMDBDir, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        recorder = LMDBProcessRecorder(self.datastore())
        recorder.create_table()
        return recorder


class TestLMDBProcessRecorderWithStrOriginatorID(WithStrOriginatorID, TestLMDBProcessRecorder):
    pass


class TestLMDBNonInterleavingNotificationIDs(WithLMDBDir, NonInterleavingNotificationIDsBaseCase):
    insert_num = 10000  # as eventsourcing runs its SQLite file case

    def create_recorder(self) -> ApplicationRecorder:
        recorder = LMDBApplicationRecorder(self.datastore())
        recorder.create_table()
        return recorder


class TestLMDBNonInterleavingWithStrOriginatorID(
    WithStrOriginatorID, TestLMDBNonInterleavingNotificationIDs
):
    pass


# ---------------------------------------------------------------------------- factory


class TestLMDBInfrastructureFactory(WithLMDBDir, InfrastructureFactoryTestCase[LMDBFactory]):
    def expected_factory_class(self) -> type[LMDBFactory]:
        return LMDBFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return LMDBAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return LMDBApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return LMDBTrackingRecorder

    class LMDBTrackingRecorderSubclass(LMDBTrackingRecorder):
        pass

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return self.LMDBTrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return LMDBProcessRecorder

    def setUp(self) -> None:
        self.make_dir()
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = LMDBFactory.__module__
        self.env[LMDBFactory.LMDB_PATH] = self.lmdb_path
        super(WithLMDBDir, self).setUp()  # the suite's setUp, after the directory exists

    def tearDown(self) -> None:
        super(WithLMDBDir, self).tearDown()
        self.remove_dir()

    def test_construct_raises_environment_error_when_path_missing(self) -> None:
        del self.env[LMDBFactory.LMDB_PATH]
        with pytest.raises(OSError, match=r"keys: TESTCASE_LMDB_PATH, LMDB_PATH$"):
            InfrastructureFactory.construct(self.env)

    def test_application_prefixed_path_wins(self) -> None:
        other = os.path.join(self.tmpdir, "other")
        self.env["TESTCASE_LMDB_PATH"] = other
        with LMDBFactory(self.env) as factory:
            assert factory.datastore.path == os.path.realpath(other)
            factory.close()

    def test_invalid_settings(self) -> None:
        for key, value in [("LMDB_MAP_SIZE", "big"), ("LMDB_MAP_SIZE", "-1"), ("LMDB_SYNC", "x")]:
            env = Environment("TestCase", {**self.env, key: value})
            with pytest.raises(OSError, match=key):
                LMDBFactory(env)

    def test_settings_reach_the_datastore(self) -> None:
        env = Environment(
            "Other",
            {
                LMDBFactory.LMDB_PATH: os.path.join(self.tmpdir, "nosync"),
                LMDBFactory.LMDB_SYNC: "no",
                LMDBFactory.LMDB_MAP_SIZE: str(1 << 20),
                LMDBFactory.LMDB_MAX_MAP_SIZE: str(1 << 22),
            },
        )
        factory = LMDBFactory(env)
        try:
            assert not factory.datastore.sync
            assert factory.datastore.map_size == 1 << 20
            assert factory.datastore.max_map_size == 1 << 22
            assert not factory.datastore.env.flags()["sync"]
        finally:
            factory.close()

    def test_tables_are_named_after_the_application(self) -> None:
        recorder = self.factory.process_recorder()
        assert isinstance(recorder, LMDBProcessRecorder)
        assert recorder.events_table_name == "testcase_events"
        assert recorder.tracking_table_name == "testcase_tracking"
        snapshots = self.factory.aggregate_recorder("snapshots")
        assert isinstance(snapshots, LMDBAggregateRecorder)
        assert snapshots.events_table_name == "testcase_snapshots"
        with self.factory.datastore.read() as txn:
            names = set(self.factory.datastore.env.dbs(txn))
        assert {b"testcase_events.log", b"testcase_events.idx", b"testcase_tracking"} <= names

    def test_application_recorder_topic(self) -> None:
        self.env[LMDBFactory.APPLICATION_RECORDER_TOPIC] = get_topic(LMDBProcessRecorder)
        assert isinstance(self.factory.application_recorder(), LMDBProcessRecorder)


# ---------------------------------------------------------------------------- applications


class WithLMDBEnviron(WithLMDBDir):
    """Selects `ledger.lmdb` through os.environ, as applications read it."""

    expected_factory_topic = "ledger.lmdb:LMDBFactory"
    _keys: ClassVar[tuple[str, ...]] = ("PERSISTENCE_MODULE", "LMDB_PATH")

    def setUp(self) -> None:
        super().setUp()
        os.environ["PERSISTENCE_MODULE"] = "ledger.lmdb"
        os.environ["LMDB_PATH"] = self.lmdb_path

    def tearDown(self) -> None:
        for key in self._keys:
            os.environ.pop(key, None)
        super().tearDown()


class TestExampleApplicationWithLMDB(WithLMDBEnviron, ExampleApplicationTestCase):
    pass


class LMDBEventCounters(LMDBTrackingRecorder, EventCountersView):
    """The suites' event-counters view: counters and tracking written in one transaction."""

    _created = b"created"
    _subsequent = b"subsequent"

    def __init__(self, datastore: LMDBDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self._counters_name = f"{self.tracking_table_name}.counters".encode()

    def table_names(self) -> list[bytes]:
        return [*super().table_names(), self._counters_name]

    def get_created_event_counter(self) -> int:
        return self._get(self._created)

    def get_subsequent_event_counter(self) -> int:
        return self._get(self._subsequent)

    def incr_created_event_counter(self, tracking: Tracking) -> None:
        self._incr(self._created, tracking)

    def incr_subsequent_event_counter(self, tracking: Tracking) -> None:
        self._incr(self._subsequent, tracking)

    def _get(self, name: bytes) -> int:
        with self.read() as txn:
            value = txn.get(name, db=self.datastore.db(self._counters_name))
        return 0 if value is None else int.from_bytes(value, "big")

    def _incr(self, name: bytes, tracking: Tracking) -> None:
        db = self.datastore.db(self._counters_name)

        def incr(txn: lmdb.Transaction[bytes]) -> None:
            self.insert_tracking_txn(txn, tracking)
            value = txn.get(name, db=db)
            count = 0 if value is None else int.from_bytes(value, "big")
            txn.put(name, (count + 1).to_bytes(8, "big"), db=db)

        self.write_retrying(incr)


class TestLMDBEventCounters(WithLMDBDir, EventCountersViewTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.factory = InfrastructureFactory[EventCountersView].construct(
            {"PERSISTENCE_MODULE": "ledger.lmdb", "LMDB_PATH": self.lmdb_path}
        )

    def tearDown(self) -> None:
        self.factory.close()
        super().tearDown()

    def construct_event_counters_view(self) -> EventCountersView:
        return self.factory.tracking_recorder(LMDBEventCounters)


class TestAggregateEventCountersProjectionWithLMDB(
    WithLMDBDir, AggregateEventCountersProjectionTestCase
):
    view_class = LMDBEventCounters
    env: ClassVar[dict[str, str]] = {}

    def setUp(self) -> None:
        super().setUp()
        self.env.clear()
        self.env.update({"PERSISTENCE_MODULE": "ledger.lmdb", "LMDB_PATH": self.lmdb_path})


class TestEventSourcedProjectionWithLMDB(WithLMDBDir, EventSourcedProjectionTestCase):
    env: ClassVar[dict[str, str]] = {}

    def setUp(self) -> None:
        super().setUp()
        self.env.clear()
        self.env.update({"PERSISTENCE_MODULE": "ledger.lmdb", "LMDB_PATH": self.lmdb_path})


del AggregateRecorderTestCase
del ApplicationRecorderTestCase
del TrackingRecorderTestCase
del ProcessRecorderTestCase
del NonInterleavingNotificationIDsBaseCase
del InfrastructureFactoryTestCase
del ExampleApplicationTestCase
del EventCountersViewTestCase
del AggregateEventCountersProjectionTestCase
del EventSourcedProjectionTestCase
