"""Fuzzing the wire codec and `adminchain append` with malformed input (SPEC §1, §5).

`ledger.codec.decode_line` gets arbitrary bytes, arbitrary text, arbitrary JSON values and
objects, and near-valid events (valid events with one field removed, retyped, broken or added):
it either returns a valid event or raises `InvalidEventError` naming the line (and the field,
where the mutation names one) — never any other exception.

Then the CLI: generated malformed documents (good lines with one bad line among them) go to
`adminchain append` — in-process through click (a few hundred) and as real subprocesses
(``ADMINCHAIN_FUZZ_EXAMPLES``, default 30, run a few at a time): exit 2, stderr names the line
and the field, no traceback, and the ledger is unchanged. Last, the checked-in corpus
``tests/malformed/*.jsonl`` (its expectations in ``tests/malformed/expected.json``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from adminchain.cli import main
from ledger.codec import MAX_LINE_BYTES, decode_line, decode_lines, encode_event_json, validate
from ledger.errors import InvalidEventError
from ledger.events import OPERATOR_EVENTS, EnterMaintenance, Event, KeepAliveFailed, event_types
from ledger.ledger import Ledger
from replay.integrity import verify
from tests.eventgen import events

CORPUS = Path(__file__).parent / "malformed"
FUZZ_EXAMPLES = int(os.environ.get("ADMINCHAIN_FUZZ_EXAMPLES", "30"))
CLI_EXAMPLES = max(200, FUZZ_EXAMPLES)
CLASSES = tuple(event_types().values())
TYPES = event_types()
FIELD_NAMES = sorted(
    {"type"} | {f.encode_name for cls in CLASSES for f in msgspec.structs.fields(cls)}
)

# ---------------------------------------------------------------------------- the oracle


def outcome(raw: bytes | str, line: int) -> Event | InvalidEventError:
    """Decode one line; anything but a valid event or a located `InvalidEventError` fails."""
    error: InvalidEventError | None = None
    try:
        event = decode_line(raw, line)
    except InvalidEventError as e:
        error = e
    if error is not None:
        assert error.line == line
        assert str(error).startswith(f"line {line}"), str(error)
        if error.field is not None:
            assert str(error).startswith(f"line {line}, field `{error.field}`: "), str(error)
        return error
    assert isinstance(event, CLASSES)
    assert decode_line(encode_event_json(event)) == event  # a returned event is a valid one
    return event


# ---------------------------------------------------------------------------- strategies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["", "2026-01-01T00:00:00Z", "Active", "quiesce", "LeaseExpired"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(FIELD_NAMES), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=10),
    json_values,
    max_size=8,
).flatmap(
    lambda d: st.sampled_from([*TYPES, "Nope", ""]).map(lambda t: {**d, "type": t}) | st.just(d)
)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return type(value).__name__


def _strict(value: object) -> bool:
    """Whether `value` is strict JSON (no NaN or infinities, which JSON cannot spell)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A valid event's wire form with one mutation, and the field the error must name (None:
    the mutation may leave the event valid, or names no single field)."""
    event = draw(events())
    doc: dict[str, Any] = json.loads(encode_event_json(event))
    cls = type(event)
    required = {f.encode_name for f in msgspec.structs.fields(cls) if f.required} | {"type"}
    mutation = draw(st.sampled_from(["remove", "retype", "unknown", "constraint", "anything"]))
    key = draw(st.sampled_from(sorted(doc)))
    if mutation == "remove":
        del doc[key]
        return _dumps(doc), key if key in required else None
    if mutation == "retype":
        original = doc[key]
        value = draw(
            json_values.filter(
                lambda v: v is not None and _kind(v) != _kind(original) and _strict(v)
            )
        )
        doc[key] = value
        return _dumps(doc), key
    if mutation == "unknown":
        name = draw(st.from_regex(r"\A[a-z][a-z0-9_]{0,12}\Z").filter(lambda n: n not in doc))
        doc[name] = draw(json_values)
        return _dumps(doc), name
    if mutation == "constraint":
        broken = draw(
            st.sampled_from(
                [
                    ("subject", ""),
                    ("subject", "s" * 257),
                    ("subject", "bad\x00subject"),
                    ("subject", "bad\x9fsubject"),
                    ("id", ""),
                    ("id", "i" * 129),
                    ("at", "2026-01-01T00:00:00"),
                    ("at", "2026-02-30T00:00:00Z"),
                    ("at", "not a time"),
                    ("type", "Unknown" + cls.__name__),
                ]
                + ([("actor", ""), ("actor", "a\nb")] if cls in OPERATOR_EVENTS else [])
            )
        )
        doc[broken[0]] = broken[1]
        return _dumps(doc), broken[0]
    doc[key] = draw(json_values)
    return _dumps(doc), None


@st.composite
def junk_lines(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, arbitrary JSON values, or arbitrary JSON objects."""
    return draw(
        st.one_of(
            st.binary(max_size=200),
            json_values.map(_dumps),
            json_objects.map(_dumps),
        )
    )


@st.composite
def bad_lines(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """One line `append` must refuse, and the field the refusal must name (the library's own
    verdict for junk; the mutated field for near-valid events)."""
    kind = draw(st.sampled_from(["near", "junk"]))
    if kind == "near":
        raw, expected = draw(near_valid())
    else:
        raw, expected = draw(junk_lines()), None
    raw = raw.replace(b"\n", b" ").rstrip(b"\r")
    result = outcome(raw, 1)
    if not raw.strip() or not isinstance(result, InvalidEventError):
        raw = raw + b"\xff"  # still a bad line, whatever it was: now it is not UTF-8
        result = outcome(raw, 1)
        expected = None
    assert isinstance(result, InvalidEventError)
    if expected is not None:
        assert result.field == expected, (str(result), raw)
    return raw, result.field


@st.composite
def malformed_documents(draw: st.DrawFn) -> tuple[bytes, int, str | None]:
    """(document, the bad line's number, its field): valid lines around one bad line, maybe
    with blank lines (which count)."""
    lines = [encode_event_json(e) for e in draw(st.lists(events(), max_size=6))]
    bad, field = draw(bad_lines())
    lines.insert(draw(st.integers(0, len(lines))), bad)
    for at in draw(st.lists(st.integers(0, len(lines)), max_size=2)):
        lines.insert(at, b"")
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return ending.join(lines) + ending, lines.index(bad) + 1, field


# ---------------------------------------------------------------------------- the codec


@given(st.binary(max_size=400), st.integers(1, 10**6))
@example(b"", 1)
@example(b"\xef\xbb\xbf{}", 1)
@example(b'{"type": "LeaseExpired", "subject": "r"}\x00', 2)
def test_arbitrary_bytes(raw: bytes, line: int) -> None:
    outcome(raw, line)


@given(st.text(max_size=200), st.integers(1, 1000))
def test_arbitrary_text(raw: str, line: int) -> None:
    outcome(raw, line)


@given(json_values, st.integers(1, 1000))
def test_arbitrary_json_values(value: object, line: int) -> None:
    result = outcome(_dumps(value), line)
    if not isinstance(value, dict):
        assert isinstance(result, InvalidEventError)


@given(json_objects, st.integers(1, 1000))
def test_arbitrary_json_objects(value: dict[str, Any], line: int) -> None:
    outcome(_dumps(value), line)
    outcome(json.dumps(value), line)  # as text too


@given(near_valid(), st.integers(1, 1000))
def test_near_valid_events_name_the_line_and_field(
    case: tuple[bytes, str | None], line: int
) -> None:
    raw, field = case
    result = outcome(raw, line)
    if field is not None:
        assert isinstance(result, InvalidEventError), f"accepted: {raw!r}"
        assert result.field == field, str(result)


def test_oversized_line_is_refused_by_length() -> None:
    raw = b'{"type": "StorageFailed", "subject": "r", "message": "' + b"x" * MAX_LINE_BYTES + b'"}'
    result = outcome(raw, 9)
    assert isinstance(result, InvalidEventError)
    assert "longer than" in str(result)
    result = outcome(raw.decode(), 9)
    assert isinstance(result, InvalidEventError)


@given(st.text(max_size=20), st.sampled_from(["\ud800", "\udfff", "\udc80"]))
def test_text_with_unpaired_surrogates(prefix: str, surrogate: str) -> None:
    raw = '{"type": "LeaseExpired", "subject": "' + prefix + surrogate + '"}'
    assert isinstance(outcome(raw, 4), InvalidEventError)
    assert isinstance(outcome(prefix + surrogate, 4), InvalidEventError)


EXTREME_TIMES = [
    ("at", "9999-12-31T23:59:59-01:00"),
    ("at", "0001-01-01T00:00:00+00:01"),
    ("deadline", "9999-12-31T23:00:00-23:59"),
]


@pytest.mark.parametrize(("field", "value"), EXTREME_TIMES)
def test_times_out_of_range_once_in_utc(field: str, value: str) -> None:
    doc = {"type": "EnterMaintenance", "subject": "node-7", "actor": "alice", field: value}
    result = outcome(_dumps(doc), 3)
    assert isinstance(result, InvalidEventError)
    assert result.field == field


@pytest.mark.parametrize("name", ["$ref", "a`b", "x - at `$.y`", "weird$"])
def test_unknown_field_is_named_exactly(name: str) -> None:
    result = outcome(_dumps({"type": "LeaseExpired", "subject": "r", name: 1}), 2)
    assert isinstance(result, InvalidEventError)
    assert result.field == name, str(result)


@pytest.mark.parametrize(
    "doc",
    [
        '{"type": "StorageFailed", "subject": "r", "message": "a\u2028b"}\n',
        '{"type": "StorageFailed", "subject": "r", "message": "a\x85b"}\n',
        b'{"type": "LeaseExpired",\r"subject": "r"}\n',
    ],
    ids=["U+2028 in a string", "NEL in a string", "CR as whitespace"],
)
def test_decode_lines_splits_like_append(doc: str | bytes) -> None:
    lines = doc.split("\n" if isinstance(doc, str) else b"\n")  # type: ignore[arg-type]
    expected = [decode_line(raw) for raw in lines if raw.strip()]
    assert decode_lines(doc) == expected


python_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.binary(max_size=10)
    | st.datetimes()
    | st.datetimes(timezones=st.timezones()),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(events(), st.data())
def test_python_built_events_are_validated_like_wire_events(
    event: Event, data: st.DataObject
) -> None:
    """Events built in Python (msgspec does not check on construction) with any field set to a
    plain value: `validate`, the facade's first step, returns a valid event or raises a located
    `InvalidEventError` — never another exception."""
    names = [f.name for f in msgspec.structs.fields(event)]
    name = data.draw(st.sampled_from(names))
    try:
        mutated = msgspec.structs.replace(event, **{name: data.draw(python_values)})
    except ValueError:  # the struct's own __post_init__ (DrainFailed needs a reason)
        assume(False)
    error: InvalidEventError | None = None
    try:
        checked = validate(mutated, 3)
    except InvalidEventError as e:
        error = e
    if error is not None:
        assert error.line == 3
        return
    assert isinstance(checked, CLASSES)
    assert decode_line(encode_event_json(checked)) == checked




@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(iter({1, 2}), id="iterator"),
        pytest.param(7, id="int"),
        pytest.param(["a"], id="list"),
    ],
)
def test_python_built_event_with_an_unencodable_value_is_refused(
    value: object, tmp_path: Path
) -> None:
    with Ledger.open(tmp_path / "ledger.lmdb") as log:
        event = EnterMaintenance(subject="node-7", actor="alice", reason=value)  # type: ignore[arg-type]
        with pytest.raises(InvalidEventError) as info:
            log.append_batch([KeepAliveFailed(subject="r"), event])
        assert info.value.line == 2
        assert info.value.field == "reason"
        assert log.size() == 0


# ---------------------------------------------------------------------------- the CLI

STDERR_LINE = re.compile(rb"^error: line (\d+)(?:, field `([^`]*)`)?: ")


def check_refusal(status: int, stderr: bytes, line: int, field: str | None) -> None:
    """Exit 2, the line and the field named on stderr's first line, no traceback."""
    assert status == 2, stderr
    assert b"Traceback" not in stderr
    match = STDERR_LINE.match(stderr)
    assert match, stderr
    assert int(match.group(1)) == line, stderr
    if field is not None:
        assert match.group(2) is not None, stderr
        assert match.group(2).decode() == field, stderr


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A closed ledger holding a few events, to copy or to append garbage to."""
    path = tmp_path_factory.mktemp("seeded") / "ledger.lmdb"
    with Ledger.open(path) as log:
        log.append_batch([KeepAliveFailed(subject=f"r{i}") for i in range(5)])
        return path, log.size()


def _size(path: Path) -> int:
    with Ledger.open(path, create=False) as log:
        assert verify(log).ok
        return log.size()


@pytest.fixture(scope="module")
def held(seeded: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """A copy of the seeded ledger, held open: in-process CLI runs share its environment."""
    path = tmp_path_factory.mktemp("held") / "ledger.lmdb"
    shutil.copytree(seeded[0], path)
    with Ledger.open(path) as log:
        yield log


@settings(max_examples=CLI_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed_documents())
def test_append_in_process_refuses_malformed_documents(held: Ledger, case: Any) -> None:
    """`adminchain append` through click, in this process: a few hundred documents."""
    document, line, field = case
    size = held.size()
    result = CliRunner().invoke(main, ["append", "--json", "--ledger", held.url], input=document)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout_bytes == b""
    check_refusal(result.exit_code, result.stderr_bytes, line, field)
    assert held.size() == size


def test_in_process_runs_stored_nothing(held: Ledger, seeded: tuple[Path, int]) -> None:
    assert held.size() == seeded[1]
    assert verify(held).ok


def _collect(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """`n` examples of `strategy` (generation only: the CLI runs them in parallel)."""
    found: list[Any] = []

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None)
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


def _run_cli(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "adminchain", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def _parallel(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(fn, items))


def test_append_subprocess_refuses_malformed_documents(
    seeded: tuple[Path, int], tmp_path: Path
) -> None:
    """The real `adminchain` process: exit 2, `line N` (and the field) on stderr, no traceback,
    nothing stored — for ``ADMINCHAIN_FUZZ_EXAMPLES`` generated documents."""
    path = tmp_path / "ledger.lmdb"
    shutil.copytree(seeded[0], path)
    size = seeded[1]
    cases = _collect(malformed_documents(), FUZZ_EXAMPLES)
    assert len(cases) >= min(FUZZ_EXAMPLES, 10)
    procs = _parallel(lambda case: _run_cli(["append", "--ledger", str(path)], case[0]), cases)
    for (document, line, field), proc in zip(cases, procs, strict=True):
        assert proc.stdout == b"", document
        check_refusal(proc.returncode, proc.stderr, line, field)
    assert _size(path) == size


def test_append_subprocess_refuses_an_oversized_line(
    seeded: tuple[Path, int], tmp_path: Path
) -> None:
    path = tmp_path / "ledger.lmdb"
    shutil.copytree(seeded[0], path)
    big = b'{"type": "StorageFailed", "subject": "r", "message": "' + b"m" * MAX_LINE_BYTES + b'"}'
    good = encode_event_json(KeepAliveFailed(subject="r"))
    proc = _run_cli(["append", "--ledger", str(path)], good + b"\n" + big + b"\n" + good + b"\n")
    check_refusal(proc.returncode, proc.stderr, 2, None)
    assert b"longer than" in proc.stderr
    assert _size(path) == seeded[1]


def test_append_subprocess_refuses_a_time_out_of_range(
    seeded: tuple[Path, int], tmp_path: Path
) -> None:
    path = tmp_path / "ledger.lmdb"
    shutil.copytree(seeded[0], path)
    good = encode_event_json(KeepAliveFailed(subject="r"))
    bad = b'{"type": "LeaseExpired", "subject": "r", "at": "9999-12-31T23:59:59-01:00"}'
    proc = _run_cli(["append", "--ledger", str(path)], good + b"\n" + bad + b"\n")
    assert _size(path) == seeded[1]
    check_refusal(proc.returncode, proc.stderr, 2, "at")


# ---------------------------------------------------------------------------- the corpus

EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())


def test_corpus_is_complete() -> None:
    """Every file has its expectation and vice versa; each file has one bad line among good
    ones; at least 25 files."""
    files = sorted(p.name for p in CORPUS.glob("*.jsonl"))
    assert files == sorted(EXPECTED)
    assert len(files) >= 25
    for name in files:
        lines = (CORPUS / name).read_bytes().split(b"\n")
        bad = EXPECTED[name]["line"]
        assert lines[-1] == b""  # a final newline
        good = [raw for i, raw in enumerate(lines[:-1], start=1) if i != bad and raw.strip()]
        assert len(good) >= 2, name
        for raw in good:
            decode_line(raw)  # the others are valid


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_is_refused_by_the_library(name: str) -> None:
    expected = EXPECTED[name]
    with pytest.raises(InvalidEventError) as info:
        decode_lines((CORPUS / name).read_bytes())
    assert (info.value.line, info.value.field) == (expected["line"], expected["field"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_is_refused_by_append(
    name: str, seeded: tuple[Path, int], tmp_path: Path
) -> None:
    """`adminchain append FILE` and `... < FILE`: exit 2, the line and field, nothing stored."""
    expected = EXPECTED[name]
    path = tmp_path / "ledger.lmdb"
    shutil.copytree(seeded[0], path)
    file = CORPUS / name
    for args, stdin in (([str(file)], None), ([], file.read_bytes())):
        result = CliRunner().invoke(main, ["append", "--ledger", str(path), *args], input=stdin)
        assert isinstance(result.exception, SystemExit), result.exception
        check_refusal(result.exit_code, result.stderr_bytes, expected["line"], expected["field"])
        assert "nothing was stored" in result.stderr
    assert _size(path) == seeded[1]


def test_corpus_through_the_real_process(seeded: tuple[Path, int], tmp_path: Path) -> None:
    """A sample of the corpus (every 8th file) through the installed process, a few at a time."""
    path = tmp_path / "ledger.lmdb"
    shutil.copytree(seeded[0], path)
    names = sorted(EXPECTED)[::8]
    procs = _parallel(
        lambda name: _run_cli(["append", "--ledger", str(path), str(CORPUS / name)], b""), names
    )
    for name, proc in zip(names, procs, strict=True):
        check_refusal(proc.returncode, proc.stderr, EXPECTED[name]["line"], EXPECTED[name]["field"])
    assert _size(path) == seeded[1]
