"""The wire and storage codecs (SPEC §1): validation names the line and the field; round trips.

Every rule of the envelope and of the catalogue has a malformed line below that must be refused
with the field it breaks.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.codec import (
    _decode_checked,
    _plain,
    canonical_bytes,
    decode_line,
    decode_lines,
    decode_record,
    encode_event_json,
    encode_record,
)
from ledger.errors import InvalidEventError
from ledger.events import (
    WIRE_EVENT,
    WIRE_EVENT_PRINTABLE,
    EnterMaintenance,
    MaintenanceObserved,
    _wire,
    event_types,
)
from tests.eventgen import events

OK = {"type": "LeaseExpired", "subject": "runner-a"}


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode()


BAD_LINES = [
    ("unknown type", line(type="Reboot", subject="n"), "type"),
    ("missing type", line(subject="n"), "type"),
    ("missing subject", line(type="LeaseExpired"), "subject"),
    ("empty subject", line(type="LeaseExpired", subject=""), "subject"),
    ("subject of 257 characters", line(type="LeaseExpired", subject="x" * 257), "subject"),
    ("control character in subject", line(type="LeaseExpired", subject="a\nb"), "subject"),
    ("DEL in subject", line(type="LeaseExpired", subject="a\x7fb"), "subject"),
    ("subject not a string", line(type="LeaseExpired", subject=7), "subject"),
    ("empty id", line(type="LeaseExpired", subject="n", id=""), "id"),
    ("id of 129 characters", line(type="LeaseExpired", subject="n", id="i" * 129), "id"),
    (
        "at without a time zone",
        line(type="LeaseExpired", subject="n", at="2026-01-01T00:00:00"),
        "at",
    ),
    ("at not a time", line(type="LeaseExpired", subject="n", at="yesterday"), "at"),
    ("at with month 13", line(type="LeaseExpired", subject="n", at="2026-13-01T00:00:00Z"), "at"),
    ("operator event without actor", line(type="Detach", subject="r"), "actor"),
    ("operator event with empty actor", line(type="Detach", subject="r", actor=""), "actor"),
    (
        "force not a bool",
        line(type="ExitMaintenance", subject="n", actor="a", force="yes"),
        "force",
    ),
    (
        "unknown maintenance state",
        line(type="MaintenanceObserved", subject="n", state="Sleeping"),
        "state",
    ),
    (
        "DrainFailed without reason",
        line(type="MaintenanceObserved", subject="n", state="DrainFailed"),
        "reason",
    ),
    ("healthy missing", line(type="HealthObserved", subject="r"), "healthy"),
    ("peers not a list", line(type="MembershipObserved", subject="c", peers="a,b"), "peers"),
    (
        "peer with a control character",
        line(type="MembershipObserved", subject="c", peers=["a\tb"]),
        "peers[0]",
    ),
    ("backend missing on an ack", line(type="BroadcastAcked", subject="b"), "backend"),
    (
        "failure reason outside the enum",
        line(type="BroadcastFailed", subject="b", backend="x", reason="oops"),
        "reason",
    ),
    (
        "quiesce reason outside the enum",
        line(
            type="IssueBroadcast",
            subject="b",
            actor="a",
            operation={"kind": "quiesce", "reason": "bored"},
            targets=[],
        ),
        "operation.reason",
    ),
    (
        "unknown operation kind",
        line(
            type="IssueBroadcast", subject="b", actor="a", operation={"kind": "reboot"}, targets=[]
        ),
        "operation.kind",
    ),
    (
        "target without backend",
        line(
            type="IssueBroadcast",
            subject="b",
            actor="a",
            operation={"kind": "quiesce", "reason": "maintenance"},
            targets=[{"live": True}],
        ),
        "targets[0].backend",
    ),
    (
        "negative ack timeout",
        line(
            type="IssueBroadcast",
            subject="b",
            actor="a",
            operation={"kind": "quiesce", "reason": "maintenance"},
            targets=[],
            ack_timeout_ms=-1,
        ),
        "ack_timeout_ms",
    ),
    (
        "negative policy duration",
        line(type="SetPolicy", subject="*", actor="a", budget_window_ms=-5),
        "budget_window_ms",
    ),
    (
        "threshold of zero",
        line(type="SetPolicy", subject="*", actor="a", keepalive_failure_threshold=0),
        "keepalive_failure_threshold",
    ),
    (
        "unknown field (a typo)",
        line(type="ExitMaintenance", subject="n", actor="a", forse=True),
        "forse",
    ),
    ("oversized reason", line(type="Detach", subject="r", actor="a", reason="x" * 5000), "reason"),
]


@pytest.mark.parametrize(("what", "raw", "field"), BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_line_names_line_and_field(what: str, raw: bytes, field: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        decode_line(raw, 7)
    assert info.value.line == 7
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"line 7, field `{field}`")


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2]",
        b"42",
        b'"text"',
        b"\xff\xfe{}",
        b'{"type": "LeaseExpired", "subject": "\xc3"}',
    ],
    ids=["malformed", "array", "number", "string", "not utf-8", "truncated utf-8"],
)
def test_malformed_lines_name_the_line(raw: bytes) -> None:
    with pytest.raises(InvalidEventError) as info:
        decode_line(raw, 3)
    assert info.value.line == 3
    assert str(info.value).startswith("line 3")


def test_document_errors_name_the_real_line_counting_blank_lines() -> None:
    doc = json.dumps(OK) + "\n\n" + json.dumps({"type": "Nope", "subject": "n"}) + "\n"
    with pytest.raises(InvalidEventError) as info:
        decode_lines(doc)
    assert info.value.line == 3


def test_every_event_type_is_in_the_catalogue() -> None:
    assert set(event_types()) == {
        "EnterMaintenance", "ExitMaintenance", "Detach", "SetPolicy", "IssueBroadcast",
        "TrustKey", "RevokeKey",
        "MaintenanceObserved", "StorageFailed", "LeaseExpired", "KeepAliveFailed", "HealthObserved",
        "BackendCrashed", "BackendRecovered", "MembershipObserved", "BroadcastAcked",
        "BroadcastTimedOut", "BroadcastFailed",
    }  # fmt: skip


def test_times_are_normalised_to_utc() -> None:
    event = decode_line(line(type="LeaseExpired", subject="n", at="2026-01-01T02:00:00+02:00"))
    assert event.at == datetime(2026, 1, 1, tzinfo=UTC)
    assert b'"at":"2026-01-01T00:00:00Z"' in encode_event_json(event)


def test_defaults_are_applied() -> None:
    event = decode_line(line(type="ExitMaintenance", subject="n", actor="a"))
    assert event.force is False  # type: ignore[union-attr]
    broadcast = decode_line(
        line(
            type="IssueBroadcast",
            subject="b",
            actor="a",
            operation={"kind": "quiesce", "reason": "maintenance"},
            targets=[{"backend": "x"}],
        )
    )
    assert broadcast.ack_timeout_ms == 5000  # type: ignore[union-attr]
    assert broadcast.targets[0].live is True  # type: ignore[union-attr]


@given(events())
def test_wire_round_trip(event: object) -> None:
    assert decode_line(encode_event_json(event)) == event  # type: ignore[arg-type]


@given(events())
def test_storage_round_trip(event: object) -> None:
    recorded = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    record = decode_record(encode_record(event, recorded))  # type: ignore[arg-type]
    assert record.event == event
    assert record.recorded_at == recorded
    assert record.version == 1


def test_storage_is_compact_msgpack_with_a_schema_version() -> None:
    event = EnterMaintenance(
        subject="node-7", actor="alice", id="e1", at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    stored = encode_record(event, datetime(2026, 1, 1, tzinfo=UTC))
    assert msgspec.msgpack.decode(stored)[0] == 1
    assert len(stored) < len(encode_event_json(event))


def test_older_records_without_new_fields_still_decode() -> None:
    """Schema evolution: a record written before a field existed decodes with its default."""
    old = msgspec.msgpack.encode(
        [
            1,
            datetime(2026, 1, 1, tzinfo=UTC),
            {"type": "ExitMaintenance", "subject": "n", "actor": "a"},
        ]
    )
    assert decode_record(old).event.force is False  # type: ignore[union-attr]


def test_canonical_bytes_ignore_signature_and_sort_keys() -> None:
    event = MaintenanceObserved(
        subject="n", state="Maintenance", at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    canonical = canonical_bytes(event)
    assert (
        canonical == b'{"at":"2026-01-01T00:00:00Z","state":"Maintenance","subject":"n",'
        b'"type":"MaintenanceObserved"}'
    )


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"type":"LeaseExpired","subject" :"a","subject":"b"}', "subject"),
        (b'{"type":"LeaseExpired","subject":"a",\n"subject"\t: "b"}', "subject"),
        (b'{"type":"LeaseExpired","subject":"a","subject":"b","actor":"x\\":y"}', "subject"),
        (b'{"type":"LeaseExpired","actor":"{","subject":"a","subject":"b"}', "subject"),
        (
            b'{"type":"IssueBroadcast","subject":"b","actor":"a","operation":{"kind":"quiesce",'
            b'"reason":"m"},"targets":[{"backend":"x","backend":"x"}]}',
            "targets[0].backend",
        ),
    ],
    ids=["space-before-colon", "whitespace", "escaped-quote-colon", "brace-in-text", "nested"],
)
def test_a_key_given_twice_is_found_whatever_the_spacing(raw: bytes, field: str) -> None:
    """The cheap scan that clears most lines (`":` counted against the decoded keys) never
    clears a line that gives a key twice."""
    with pytest.raises(InvalidEventError) as caught:
        decode_line(raw, 3)
    assert caught.value.field == field
    assert "twice" in str(caught.value)


@given(events())
def test_a_valid_line_with_a_colon_after_a_quote_in_a_text_decodes(event: object) -> None:
    raw = encode_event_json(event)  # type: ignore[arg-type]
    tricky = raw[:-1] + b',"actor":"\\": {x"}' if b'"actor"' not in raw else raw
    assert decode_line(tricky, 1).subject == decode_line(raw, 1).subject


def test_a_tuple_given_for_a_list_is_validated_into_the_list_decoding_gives() -> None:
    """A Python-built event may hold a tuple where the catalogue says list (it encodes the
    same): `validate` returns it as a list, so the event equals itself read back (the case
    hypothesis found in tests/test_fuzz.py)."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from ledger.codec import decode_line, encode_event_json, validate  # noqa: PLC0415
    from ledger.events import MembershipObserved  # noqa: PLC0415

    given = MembershipObserved(subject="alpha", at=datetime(2024, 1, 1, tzinfo=UTC), peers=("0",))  # type: ignore[arg-type]
    checked = validate(given, 3)
    assert isinstance(checked, MembershipObserved)
    assert checked.peers == ["0"]
    assert type(checked.peers) is list
    assert decode_line(encode_event_json(checked)) == checked
    as_list = MembershipObserved(subject="alpha", at=datetime(2024, 1, 1, tzinfo=UTC), peers=["0"])
    assert validate(as_list) is as_list  # nothing to change: the very event


# ------------------------------------------------- the plain path (`_plain`, `_decode_plain`)

_MUTATIONS = [
    b"",  # as encoded: valid
    b',"subject":"again"',  # a key given twice
    b',"subject" :"again"',  # ... with a space before its colon
    b',"actor":"a\\u0001b"',  # a control character, escaped
    b',"actor":"a\x7fb"',  # DEL, raw
    b',"actor":"a\xc2\x85b"',  # a C1 control character (U+0085) in UTF-8
    b',"actor":"a\\u0085b"',  # ... escaped
    b',"actor":"\\ud800"',  # a lone surrogate
    b',"at":"2024-01-01T00:00:00.1234567Z"',  # finer than a microsecond
    b',"at":"2024-01-01T00:00:00.123456"',  # no time zone
    b',"actor":""',  # too short
    b',"id":"' + b"x" * 129 + b'"',  # too long
    b',"nope":1',  # an unknown field
    b',"actor":"\xe9t\xc3\xa9"',  # not UTF-8, then UTF-8
    b',"actor":"caf\xc3\xa9"',  # valid UTF-8, not ASCII: the full path, accepted
    b',"signature":{"key":"k","sig":"s","key":"k2"}',  # twice, nested
    b',"signature":{"key":"k\\u0002","sig":"s"}',  # a control character, nested
    b"}",  # malformed
]


@given(events(), st.sampled_from(_MUTATIONS), st.booleans())
def test_the_plain_path_decides_every_line_as_the_full_path_does(
    event: object, extra: bytes, spaced: bool
) -> None:
    """`decode_line` takes a shorter path for plain lines; for any line, valid or not, it
    returns the same event as the full path (`_decode_checked`) or raises the same error."""
    raw = encode_event_json(event)[:-1] + extra + b"}"  # type: ignore[arg-type]
    if spaced:
        raw = raw.replace(b'":', b'": ').replace(b',"', b', "')
    outcomes: list[tuple[str, object]] = []
    for decode in (decode_line, _decode_checked):
        try:
            outcomes.append(("event", decode(raw, 4)))
        except InvalidEventError as e:
            outcomes.append(("error", (str(e), e.line, e.field)))
    assert outcomes[0] == outcomes[1]


def test_plain_lines_take_the_plain_path_and_others_do_not() -> None:
    """The shorter path is the common one (a mutant that never takes it would pass the test
    above), and what it cannot judge goes the full way."""
    line = encode_event_json(
        EnterMaintenance(
            subject="node-7", actor="alice", reason="kernel upgrade",
            at=datetime(2024, 1, 1, 0, 0, 0, 50_000, tzinfo=UTC),
        )
    )  # fmt: skip
    assert _plain(line)
    for extra in _MUTATIONS[2:9]:
        assert not _plain(line[:-1] + extra + b"}"), extra
    assert not _plain(b"\xef\xbb\xbf" + line)  # a byte order mark


def test_the_printable_mirror_lacks_only_the_control_character_pattern() -> None:
    """`WIRE_EVENT_PRINTABLE` (for plain lines) keeps every constraint but the pattern that
    refuses control characters, which a plain line cannot hold."""
    raw = b'{"type":"LeaseExpired","subject":"a\\u0001"}'
    msgspec.json.decode(raw, type=WIRE_EVENT_PRINTABLE)
    with pytest.raises(msgspec.ValidationError, match="matching regex"):
        msgspec.json.decode(raw, type=WIRE_EVENT)
    with pytest.raises(msgspec.ValidationError, match="length"):
        msgspec.json.decode(b'{"type":"LeaseExpired","subject":""}', type=WIRE_EVENT_PRINTABLE)
    other = _wire(pattern="^a+$", max_length=3)
    assert other.printable.pattern == "^a+$"
    assert other.printable.max_length == 3
