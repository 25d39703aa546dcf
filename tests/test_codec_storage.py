"""The storage decoder skips the wire constraints; the wire keeps every one of them.

Stored events were validated at append and are covered by the Merkle tree, so `decode_record`
decodes into the public event classes without re-running lengths, patterns, time zones or the
DrainFailed rule. The wire (`decode_line`, `validate`) checks them through the generated mirror
`WIRE_EVENT`. Both paths give the same classes and values; the stored bytes do not change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import given

from ledger.codec import (
    decode_line,
    decode_record,
    encode_event_json,
    encode_record,
    validate,
)
from ledger.errors import InvalidEventError
from ledger.events import (
    WIRE_EVENT,
    IssueBroadcast,
    LeaseExpired,
    MaintenanceObserved,
    Quiesce,
    Signature,
    Target,
    event_types,
    wire_type,
)
from tests.eventgen import events

RECORDED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
AT = datetime(2026, 5, 1, 11, 0, tzinfo=UTC)


def stored(event: dict[str, Any]) -> bytes:
    """A stored record written by hand, as msgpack, bypassing every check."""
    return msgspec.msgpack.encode([1, RECORDED, event])


@given(events())
def test_a_stored_record_decodes_to_the_same_class_and_value_as_the_wire(event: Any) -> None:
    from_storage = decode_record(encode_record(event, RECORDED)).event
    from_wire = decode_line(encode_event_json(event))
    assert type(from_storage) is type(from_wire) is type(event)
    assert from_storage == from_wire == event


def test_nested_structs_are_the_public_classes_on_both_paths() -> None:
    event = IssueBroadcast(
        subject="b1",
        actor="bob",
        at=AT,
        operation=Quiesce(reason="maintenance"),
        targets=[Target(backend="node-1"), Target(backend="node-2", live=False)],
        signature=Signature(key="bob", sig="c2ln"),
    )
    for decoded in (
        decode_record(encode_record(event, RECORDED)).event,
        decode_line(encode_event_json(event)),
    ):
        assert isinstance(decoded, IssueBroadcast)
        assert type(decoded.operation) is Quiesce
        assert all(type(t) is Target for t in decoded.targets)
        assert type(decoded.signature) is Signature
        assert decoded == event


def test_the_wire_returns_the_catalogue_classes_not_the_mirror() -> None:
    catalogue = set(event_types().values())
    mirrors = set(WIRE_EVENT.__args__)
    assert not catalogue & mirrors
    assert {m.__name__ for m in mirrors} == set(event_types())
    event = decode_line(b'{"type":"LeaseExpired","subject":"runner-a"}')
    assert type(event) in catalogue
    assert validate(LeaseExpired(subject="runner-a")).__class__ is LeaseExpired


@given(events())
def test_the_mirror_encodes_to_the_same_stored_bytes(event: Any) -> None:
    """Same fields, order, tags and options: the Merkle leaves cannot tell them apart."""
    mirror = msgspec.json.decode(encode_event_json(event), type=WIRE_EVENT)
    assert type(mirror) is not type(event)
    assert msgspec.msgpack.encode([1, RECORDED, mirror]) == encode_record(event, RECORDED)


@pytest.mark.parametrize(
    ("name", "event", "field"),
    [
        ("control character in subject", {"type": "LeaseExpired", "subject": "n\x07"}, "subject"),
        ("empty subject", {"type": "LeaseExpired", "subject": ""}, "subject"),
        ("long id", {"type": "LeaseExpired", "subject": "n", "id": "i" * 129}, "id"),
        (
            "control character in actor",
            {"type": "ExitMaintenance", "subject": "n", "actor": "a\x1b[0m"},
            "actor",
        ),
        (
            "negative millis",
            {"type": "SetPolicy", "subject": "*", "actor": "a", "retry_backoff_ms": -1},
            "retry_backoff_ms",
        ),
        (
            "control character in a target",
            {
                "type": "IssueBroadcast",
                "subject": "b",
                "actor": "a",
                "operation": {"kind": "quiesce", "reason": "maintenance"},
                "targets": [{"backend": "x\x00", "live": True}],
            },
            "targets[0].backend",
        ),
        (
            "DrainFailed without reason",
            {"type": "MaintenanceObserved", "subject": "n", "state": "DrainFailed"},
            "reason",
        ),
    ],
)
def test_storage_does_not_recheck_what_the_wire_refuses(
    name: str, event: dict[str, Any], field: str
) -> None:
    """The tree, not the decoder, guards storage: such a record still decodes, the wire refuses."""
    record = decode_record(stored(event))
    assert type(record.event) is event_types()[event["type"]]
    assert msgspec.to_builtins(record.event) == event
    with pytest.raises(InvalidEventError) as info:
        decode_line(msgspec.json.encode(event), 4)
    assert info.value.field == field
    assert info.value.line == 4


def test_a_stored_subject_with_a_control_character_reads_back_as_written() -> None:
    record = decode_record(stored({"type": "LeaseExpired", "subject": "node\x01", "at": AT}))
    assert record.event == LeaseExpired(subject="node\x01", at=AT)
    assert record.recorded_at == RECORDED
    with pytest.raises(InvalidEventError, match="matching regex") as info:
        validate(record.event)
    assert info.value.field == "subject"


def test_drain_failed_without_reason_is_refused_on_the_wire_only() -> None:
    bare = MaintenanceObserved(subject="n", state="DrainFailed")  # constructing does not check
    assert decode_record(encode_record(bare, RECORDED)).event == bare
    with pytest.raises(InvalidEventError, match="`reason` is required") as info:
        validate(bare, 2)
    assert (info.value.field, info.value.line) == ("reason", 2)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "LeaseExpired", "subject": 7},
        {"type": "Reboot", "subject": "n"},
        {"type": "LeaseExpired"},
        {"type": "LeaseExpired", "subject": "n", "extra": 1},
        {"type": "MaintenanceObserved", "subject": "n", "state": "Sleeping"},
    ],
)
def test_storage_still_refuses_records_of_the_wrong_shape(event: dict[str, Any]) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_record(stored(event))


def test_a_plain_meta_on_a_public_annotation_is_refused() -> None:
    """Constraints are declared as `WireOnly`; a `msgspec.Meta` would be checked on storage too."""
    with pytest.raises(TypeError, match="WireOnly"):
        wire_type(Annotated[str, msgspec.Meta(min_length=1)])


def test_a_type_without_a_wire_rule_is_refused() -> None:
    with pytest.raises(TypeError, match="no wire rule"):
        wire_type(dict[str, int])
