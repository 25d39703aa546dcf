"""Codecs for events: the JSON Lines wire format and the compact msgpack storage format.

Wire (SPEC §1): one JSON object per line. `decode_line` validates everything the catalogue
declares and raises `InvalidEventError` naming the line and the field (msgspec's error path,
e.g. ``$.targets[0].backend``, becomes ``targets[0].backend``). It checks the line with the
constrained mirror of the catalogue (`ledger.events.WIRE_EVENT`), then decodes the same bytes
into the public event classes, whose annotations msgspec does not check. A plain line (printable
ASCII, no escapes: nearly every line) is checked with a mirror without the control-character
pattern, which such a line cannot break (`_plain`, `_decode_plain`).

Storage: a msgpack array ``[schema_version, recorded_at, event]``. Times are stored as msgpack
timestamps, so they read back in UTC. The stored bytes, prefixed with the position, are the
Merkle leaf (SPEC §4): see `leaf_bytes`. `decode_record` does not re-run the wire constraints
(lengths, patterns, time zones, DrainFailed's reason): stored events were validated at append,
and the Merkle tree, not the decoder, guards what is stored. It still checks the structure
(types, tags, literals, required and unknown fields), so garbage raises `msgspec.DecodeError`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, Final

import msgspec

from ledger import merkle
from ledger.errors import InvalidEventError, StorageError
from ledger.events import WIRE_EVENT, WIRE_EVENT_PRINTABLE, Event

__all__ = [
    "MAX_LINE_BYTES",
    "SCHEMA_VERSION",
    "canonical_bytes",
    "decode_chunk",
    "decode_line",
    "decode_lines",
    "decode_record",
    "encode_event_json",
    "encode_record",
    "event_to_builtins",
    "iter_lines",
    "leaf_bytes",
    "leaf_hashes",
    "read_lines",
    "record_decoder",
    "recorded_at_of",
    "validate",
]

SCHEMA_VERSION: Final = 1
MAX_LINE_BYTES: Final = 1 << 20

_wire_checker: Final = msgspec.json.Decoder(WIRE_EVENT)  # the constraints: errors, paths
_wire_printable_checker: Final = msgspec.json.Decoder(WIRE_EVENT_PRINTABLE)  # `_decode_plain`
_json_decoder: Final = msgspec.json.Decoder(Event)  # the public classes, once checked
_json_encoder: Final = msgspec.json.Encoder()
_canonical_encoder: Final = msgspec.json.Encoder(order="sorted")


class StoredRecord(msgspec.Struct, frozen=True, array_like=True):
    """What is stored for one event: schema version, ledger clock at append, the event."""

    version: int
    recorded_at: datetime
    event: Event


class _RecordHead(msgspec.Struct, frozen=True, array_like=True):
    """A stored record with its event left undecoded (for `recorded_at_of`)."""

    version: int
    recorded_at: datetime
    event: msgspec.Raw


_head_decoder: Final = msgspec.msgpack.Decoder(_RecordHead)
_record_encoder: Final = msgspec.msgpack.Encoder()
_msgpack_encoder: Final = _record_encoder
_wire_msgpack_checker: Final = msgspec.msgpack.Decoder(WIRE_EVENT)
record_decoder: Final = msgspec.msgpack.Decoder(StoredRecord)
"""Decodes stored bytes (`decode_record` is the named form; replay's hot loop binds this)."""

_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def _located(
    exc: msgspec.ValidationError | msgspec.DecodeError, line: int | None
) -> InvalidEventError:
    """Turn a msgspec error into one that names the line and the field."""
    message = str(exc)
    path = ""
    match = _AT_PATH.search(message)
    if match:
        path = match.group("path")
        message = message[: match.start()]
    field: str | None = path or None
    name: str | None = None
    if message.startswith("`") and "`" in message[1:]:  # ours: "`reason` is required …"
        name = message[1 : message.index("`", 1)]
    elif message.startswith(("Object missing required field", "Object contains unknown field")):
        name = message[message.index("`") + 1 : message.rindex("`")]  # names may hold backticks
    if name is not None:
        field = f"{path}.{name}" if path else name
    if field == "type" and message.startswith("Invalid value"):
        message = message.replace("Invalid value", "unknown event type", 1)
    elif isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        message = f"malformed JSON ({message})"
    return InvalidEventError(message[:1].lower() + message[1:], line=line, field=field)


def decode_line(data: bytes | str, line: int | None = None) -> Event:
    """Decode and validate one wire event. Raises `InvalidEventError` naming line and field.

    A plain line (`_plain`: the common case) takes a shorter path to the same result; any line
    that path refuses takes the full one (`_decode_checked`), which names the error."""
    if isinstance(data, str):
        if len(data) > MAX_LINE_BYTES:
            raise InvalidEventError(f"line longer than {MAX_LINE_BYTES} bytes", line=line)
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as e:
            detail = f"not valid UTF-8 (character {e.start + 1} is an unpaired surrogate)"
            raise InvalidEventError(detail, line=line) from e
    if len(data) <= MAX_LINE_BYTES and _plain(data):
        try:
            return _decode_plain(data, line)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            pass
    return _decode_checked(data, line)


def _decode_checked(data: bytes, line: int | None) -> Event:
    """`decode_line`'s full path: every check, in the order that names the first problem."""
    if len(data) > MAX_LINE_BYTES:
        raise InvalidEventError(f"line longer than {MAX_LINE_BYTES} bytes", line=line)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        detail = f"not valid UTF-8 (byte {e.start + 1})"
        raise InvalidEventError(detail, line=line) from e
    _precheck(data, line)
    try:
        _wire_checker.decode(data)
        return normalise(_json_decoder.decode(data), line)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise _located(e, line) from e
    except RecursionError as e:
        raise InvalidEventError("values nested too deep", line=line) from e


_PRINTABLE: Final = bytes(b for b in range(0x20, 0x7F) if b != ord("\\"))
"""Printable ASCII but the backslash: what a line `_plain` passes is made of."""
_QUOTE_THEN_SPACE: Final = re.compile(rb'" ')


def _plain(data: bytes) -> bool:
    """True for a line made of printable ASCII without a backslash (so valid UTF-8, with no byte
    order mark, no escape, no control character, no DEL), without a space after a quote (one
    may stand before a key's colon) and without a time finer than a microsecond: the common
    case, which `_decode_plain` checks. Each test is one scan in C."""
    return (
        not data.translate(None, _PRINTABLE)
        and _QUOTE_THEN_SPACE.search(data) is None
        and _SUBSECOND.search(data) is None
    )


def _decode_plain(data: bytes, line: int | None) -> Event:
    """`decode_line` of a line that `_plain` passes.

    Its strings cannot hold a control character, so it is checked against
    `WIRE_EVENT_PRINTABLE`, which lacks the control-character pattern (a regular expression per
    string: most of a check's cost). No escape can spell a quote, and no whitespace comes before
    a colon, so every key occurrence is one ``":`` and every ``":`` ends a key: a top-level
    object with as many keys as the line has ``":`` holds no nested object and repeats no key.
    msgspec's errors propagate: the caller then takes the full path, which names them."""
    document = _untyped.decode(data)
    if (type(document) is not dict or data.count(_KEY_END) != len(document)) and _counts_differ(
        data
    ):
        _exact_check(data, line)
    _wire_printable_checker.decode(data)
    return normalise(_json_decoder.decode(data), line)


_BOM: Final = b"\xef\xbb\xbf"
_KEY_END: Final = b'":'
_QUOTE_SPACE: Final = re.compile(rb'"[ \t\r\n]+:')
_SUBSECOND: Final = re.compile(rb"\.\d{7}")
_SURROGATE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_TOO_PRECISE: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7,}")
_untyped: Final = msgspec.json.Decoder()


def _precheck(data: bytes, line: int | None) -> None:
    """What msgspec would accept silently, refused (issue 13.8): a byte order mark, a key given
    twice in one object (msgspec keeps the last), a time finer than a microsecond (msgspec
    rounds it), a lone UTF-16 surrogate escape (not a character). Cheap scans find the lines
    that may hold one; only those are parsed again (`_exact_check`) to name the field."""
    if data.startswith(_BOM):
        raise InvalidEventError(
            "the line starts with a byte order mark (U+FEFF): write UTF-8 without one", line=line
        )
    if (
        _SUBSECOND.search(data)
        or (b"\\u" in data and _SURROGATE.search(data))
        or _may_repeat_a_key(data)
    ):
        _exact_check(data, line)


def _may_repeat_a_key(data: bytes) -> bool:
    """False only when no object of the line gives a key twice (True: look closer).

    Every key occurrence ends with ``":`` unless whitespace comes before its colon (then: True),
    so the count of ``":`` is at least the number of key occurrences; the decoded objects hold
    each distinct key once. When the two counts are equal, no key can occur twice."""
    return _QUOTE_SPACE.search(data) is not None or _counts_differ(data)


def _counts_differ(data: bytes) -> bool:
    """True unless the count of ``":`` in the line equals the number of distinct keys of its
    objects (when every key ends with ``":``, equal counts mean that no key occurs twice)."""
    try:
        document = _untyped.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return False  # malformed: msgspec says so, with its own message
    if data.count(b"{") == 1 and isinstance(document, dict):
        return data.count(_KEY_END) != len(document)  # one object (the common case)
    distinct, stack = 0, [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            distinct += len(value)
            stack.extend(v for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend(v for v in value if isinstance(v, dict | list))
    return data.count(_KEY_END) != distinct


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's members in order, duplicates kept."""


def _exact_check(data: bytes, line: int | None) -> None:
    try:
        document = json.loads(data, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return  # malformed or too deep: msgspec says so, with its own message
    _walk(document, "", line)


def _walk(value: Any, path: str, line: int | None) -> None:
    if isinstance(value, _Pairs):
        seen: set[str] = set()
        for key, member in value:
            where = f"{path}.{key}" if path else key
            if key in seen:
                raise InvalidEventError("the key is given twice in one object", line=line,
                                        field=where)  # fmt: skip
            seen.add(key)
            _walk(member, where, line)
    elif isinstance(value, list):
        for number, item in enumerate(value):
            _walk(item, f"{path}[{number}]", line)
    elif isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError as e:
            detail = "a lone UTF-16 surrogate (\\ud800-\\udfff) is not a character"
            raise InvalidEventError(detail, line=line, field=path or None) from e
        if _TOO_PRECISE.match(value):
            raise InvalidEventError(
                "times are kept to the microsecond: this one has more digits (nanoseconds)",
                line=line, field=path or None,
            )  # fmt: skip


def read_lines(stream: IO[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Lines of a binary stream without their line ending, each read at most `limit` bytes
    ahead: an endless line is refused (`InvalidEventError` naming it) without being held."""
    number = 0
    while True:
        raw = stream.readline(limit + 2)
        if not raw:
            return
        number += 1
        line = raw.rstrip(b"\r\n")
        if len(line) > limit:
            raise InvalidEventError(f"line longer than {limit} bytes", line=number)
        yield line


def validate(event: Event, line: int | None = None) -> Event:
    """Check an event built in Python against the catalogue, as decoding would.

    The event goes through msgpack (which, unlike JSON, keeps every Python type as it is: a
    NaN stays a float, bytes stay bytes) into the constrained mirror `WIRE_EVENT`, so any value
    the wire would refuse is refused here, with the same located message.
    """
    if not isinstance(event, msgspec.Struct):
        raise InvalidEventError(f"not an event: {type(event).__name__}", line=line)
    try:
        checked = _wire_msgpack_checker.decode(_msgpack_encoder.encode(event))
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise _located(e, line) from e
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidEventError(
            f"not a JSON value ({e})", line=line, field=_unencodable_field(event)
        ) from e
    stringified = _stringified(event, checked)
    if stringified is not None:
        path, value = stringified
        raise InvalidEventError(
            f"expected `str`, got `{type(value).__name__}`", line=line, field=path
        )
    return normalise(_listed(event), line)


def _listed(value: Any) -> Any:
    """`value` with every tuple made a list, as decoding gives it (a Python-built event may hold
    a tuple where the catalogue says list: it encodes the same, and must compare the same as
    the event read back); the very object when there is none."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, tuple):
        return [_listed(item) for item in value]
    if isinstance(value, list):
        items = [_listed(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, msgspec.Struct):
        changes = {}
        for name, _ in _field_names(type(value)):
            given = getattr(value, name)
            made = _listed(given)
            if made is not given:
                changes[name] = made
        return msgspec.structs.replace(value, **changes) if changes else value
    return value


def _stringified(given: Any, checked: Any, path: str = "") -> tuple[str, Any] | None:
    """The first value the encoder turned into a string (a naive datetime, a UUID, a Decimal)
    where the catalogue wants a string: the wire check saw the string, not what was given."""
    if isinstance(checked, str):
        return None if isinstance(given, str) else (path, given)
    if isinstance(checked, msgspec.Struct) and isinstance(given, msgspec.Struct):
        for name, wire_name in _field_names(type(checked)):
            value = getattr(given, name, None)
            if type(value) in _PLAIN:  # the common case, settled without a call
                continue
            found = _stringified(
                value, getattr(checked, name), f"{path}.{wire_name}" if path else wire_name
            )
            if found is not None:
                return found
    if isinstance(checked, list) and isinstance(given, list | tuple):
        for index, (a, b) in enumerate(zip(given, checked, strict=False)):
            found = _stringified(a, b, f"{path}[{index}]")
            if found is not None:
                return found
    return None


_PLAIN: Final = frozenset({str, int, float, bool, type(None)})
"""Types the encoder never turns into a string (so `_stringified` need not look inside)."""


@functools.cache
def _field_names(kind: type[msgspec.Struct]) -> tuple[tuple[str, str], ...]:
    """(attribute, wire name) of each field of a struct type (`msgspec.structs.fields` builds
    its field descriptions anew on every call)."""
    return tuple((info.name, info.encode_name) for info in msgspec.structs.fields(kind))


def _unencodable_field(event: Event) -> str | None:
    """The wire name of the first field whose value JSON cannot encode."""
    for info in msgspec.structs.fields(event):
        try:
            _json_encoder.encode(getattr(event, info.name))
            _msgpack_encoder.encode(getattr(event, info.name))
        except (TypeError, ValueError, OverflowError):
            return info.encode_name
    return None


def iter_lines(lines: Iterable[bytes | str]) -> Iterator[tuple[int, Event]]:
    """Decode JSON Lines lazily, yielding (line number, event); blank lines are skipped."""
    for number, raw in enumerate(lines, start=1):
        if not raw or raw.isspace():  # blank (isspace: no copy of the line, as strip makes)
            continue
        yield number, decode_line(raw, number)


def decode_lines(data: bytes | str) -> list[Event]:
    """Decode a whole JSON Lines document; the first invalid line raises.

    Lines end at "\n" only (an optional "\r" before it is dropped), as JSON Lines says: other
    Unicode line breaks are legal inside JSON strings.
    """
    if isinstance(data, bytes):
        lines: list[bytes] | list[str] = [x.removesuffix(b"\r") for x in data.split(b"\n")]
    else:
        lines = [x.removesuffix("\r") for x in data.split("\n")]
    return [event for _, event in iter_lines(lines)]


def normalise(event: Event, line: int | None = None) -> Event:
    """Times in UTC, so that the stored form and the canonical bytes are unique."""
    at, deadline = event.at, getattr(event, "deadline", None)
    if (at is None or at.tzinfo is UTC) and (deadline is None or deadline.tzinfo is UTC):
        return event  # the common case, decided without allocating
    changes: dict[str, Any] = {}
    for name in ("at", "deadline"):
        value = getattr(event, name, None)
        if not isinstance(value, datetime) or value.tzinfo is UTC:
            continue
        try:
            changes[name] = value.astimezone(UTC)
        except OverflowError as e:
            detail = "the time is outside years 1-9999 once converted to UTC"
            raise InvalidEventError(detail, line=line, field=name) from e
    return msgspec.structs.replace(event, **changes) if changes else event


def encode_event_json(event: Event) -> bytes:
    """The wire form of one event (no trailing newline)."""
    return _json_encoder.encode(event)


def event_to_builtins(event: Event) -> dict[str, Any]:
    """The wire form as Python builtins, for embedding in JSON outputs."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result


def canonical_bytes(event: Event) -> bytes:
    """The bytes an operator signs: the wire form without `signature`, keys sorted, times UTC."""
    return _canonical_encoder.encode(msgspec.structs.replace(normalise(event), signature=None))


def encode_record(event: Event, recorded_at: datetime) -> bytes:
    """The stored bytes of one event."""
    return _record_encoder.encode(StoredRecord(SCHEMA_VERSION, recorded_at, event))


def decode_record(data: bytes) -> StoredRecord:
    """Decode stored bytes, without the wire constraints (the Merkle tree guards them); raises
    `msgspec.DecodeError` on corruption (callers translate)."""
    return record_decoder.decode(data)


def decode_chunk(chunk: list[tuple[int, bytes]]) -> list[Event]:
    """The events of a chunk of (position, stored bytes); `StorageError` names the first
    position that cannot be decoded (replay and the views' catch-up read the log this way)."""
    decode = record_decoder.decode
    try:
        return [decode(stored).event for _, stored in chunk]
    except msgspec.DecodeError:
        for position, stored in chunk:
            try:
                decode(stored)
            except msgspec.DecodeError as e:
                detail = f"position {position}: stored event cannot be decoded ({e})"
                raise StorageError(detail) from e
        raise


def recorded_at_of(data: bytes) -> datetime:
    """The `recorded_at` of stored bytes, without decoding the event (`msgspec.DecodeError`)."""
    return _head_decoder.decode(data).recorded_at


def leaf_bytes(position: int, stored: bytes) -> bytes:
    """The Merkle leaf of one event (SPEC §4.2): its position (8 bytes, big-endian) then its
    stored bytes. The one definition: `leaf_hashes` hashes exactly this."""
    return position.to_bytes(8, "big") + stored


def leaf_hashes(entries: Iterable[tuple[int, bytes]]) -> list[bytes]:
    """``merkle.leaf_hash(leaf_bytes(position, stored))`` of each (position, stored), in one
    loop: the hot path of appends and `verify` (`tests/test_codec.py` checks that they agree)."""
    sha256, prefix = hashlib.sha256, merkle.LEAF_PREFIX
    return [sha256(prefix + p.to_bytes(8, "big") + s).digest() for p, s in entries]
