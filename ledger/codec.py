"""Codecs for events: the JSON Lines wire format and the compact msgpack storage format.

Wire (SPEC §1): one JSON object per line. `decode_line` validates everything the catalogue
declares and raises `InvalidEventError` naming the line and the field (msgspec's error path,
e.g. ``$.targets[0].backend``, becomes ``targets[0].backend``).

Storage: a msgpack array ``[schema_version, recorded_at, event]``. Times are stored as msgpack
timestamps, so they read back in UTC. The stored bytes, prefixed with the position, are the
Merkle leaf (SPEC §4): see `leaf_bytes`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from ledger.errors import InvalidEventError
from ledger.events import Event

__all__ = [
    "MAX_LINE_BYTES",
    "SCHEMA_VERSION",
    "StoredRecord",
    "canonical_bytes",
    "decode_line",
    "decode_lines",
    "decode_record",
    "encode_event_json",
    "encode_record",
    "event_to_builtins",
    "iter_lines",
    "leaf_bytes",
    "normalise",
    "validate",
]

SCHEMA_VERSION: Final = 1
MAX_LINE_BYTES: Final = 1 << 20

_json_decoder: Final = msgspec.json.Decoder(Event)
_json_encoder: Final = msgspec.json.Encoder()
_canonical_encoder: Final = msgspec.json.Encoder(order="sorted")


class StoredRecord(msgspec.Struct, frozen=True, array_like=True):
    """What is stored for one event: schema version, ledger clock at append, the event."""

    version: int
    recorded_at: datetime
    event: Event


_record_encoder: Final = msgspec.msgpack.Encoder()
_record_decoder: Final = msgspec.msgpack.Decoder(StoredRecord)

_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_FIRST_NAME = re.compile(r"`(?P<name>[^`$]+)`")


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
    if message.startswith(("Object missing required field", "Object contains unknown field")) or (
        message.startswith("`") and "is required" in message
    ):
        name = _FIRST_NAME.search(message)
        if name:
            field = f"{path}.{name.group('name')}" if path else name.group("name")
    if field == "type" and message.startswith("Invalid value"):
        message = message.replace("Invalid value", "unknown event type", 1)
    elif isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        message = f"malformed JSON ({message})"
    return InvalidEventError(message[:1].lower() + message[1:], line=line, field=field)


def decode_line(data: bytes | str, line: int | None = None) -> Event:
    """Decode and validate one wire event. Raises `InvalidEventError` naming line and field."""
    if isinstance(data, bytes):
        if len(data) > MAX_LINE_BYTES:
            raise InvalidEventError(f"line longer than {MAX_LINE_BYTES} bytes", line=line)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            detail = f"not valid UTF-8 (byte {e.start + 1})"
            raise InvalidEventError(detail, line=line) from e
    elif len(data) > MAX_LINE_BYTES:
        raise InvalidEventError(f"line longer than {MAX_LINE_BYTES} bytes", line=line)
    try:
        return normalise(_json_decoder.decode(data))
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise _located(e, line) from e


def validate(event: Event, line: int | None = None) -> Event:
    """Check an event built in Python against the catalogue, as decoding would."""
    if not isinstance(event, msgspec.Struct):
        raise InvalidEventError(f"not an event: {type(event).__name__}", line=line)
    try:
        return normalise(_json_decoder.decode(_json_encoder.encode(event)))
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise _located(e, line) from e


def iter_lines(lines: Iterable[bytes | str]) -> Iterator[tuple[int, Event]]:
    """Decode JSON Lines lazily, yielding (line number, event); blank lines are skipped."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        yield number, decode_line(raw, number)


def decode_lines(data: bytes | str) -> list[Event]:
    """Decode a whole JSON Lines document; the first invalid line raises."""
    return [event for _, event in iter_lines(data.splitlines())]


def normalise(event: Event) -> Event:
    """Times in UTC, so that the stored form and the canonical bytes are unique."""
    at = event.at
    if (at is None or at.tzinfo is UTC) and getattr(event, "deadline", None) is None:
        return event  # the common case, decided without allocating
    changes: dict[str, Any] = {}
    for name in ("at", "deadline"):
        value = getattr(event, name, None)
        if isinstance(value, datetime) and value.utcoffset() != UTC.utcoffset(None):
            changes[name] = value.astimezone(UTC)
        elif isinstance(value, datetime) and value.tzinfo is not UTC:
            changes[name] = value.replace(tzinfo=UTC)
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
    """Decode stored bytes; raises `msgspec.DecodeError` on corruption (callers translate)."""
    return _record_decoder.decode(data)


def leaf_bytes(position: int, stored: bytes) -> bytes:
    """The Merkle leaf of one event: its position (8 bytes, big-endian) then its stored bytes."""
    return position.to_bytes(8, "big") + stored
