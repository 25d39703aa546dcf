"""The LMDB storage layout version (SPEC §6): written on a new ledger, added to an older one on
its first open for writing, and an unknown one refused with a message that names both versions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from ledger.errors import StorageError
from ledger.events import KeepAliveFailed
from ledger.ledger import Ledger
from ledger.lmdb_backend import FORMAT, FORMAT_KEY


def _raw_format(path: Path) -> bytes | None:
    """The marker as stored, read with lmdb itself (no adminchain code)."""
    env = lmdb.open(str(path), max_dbs=32, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            value = txn.get(FORMAT_KEY.encode(), db=env.open_db(b"ledger.meta", txn=txn))
            return None if value is None else bytes(value)
    finally:
        env.close()


def _set_raw_format(path: Path, value: bytes | None) -> None:
    env = lmdb.open(str(path), max_dbs=32)
    try:
        with env.begin(write=True) as txn:
            db = env.open_db(b"ledger.meta", txn=txn)
            if value is None:
                txn.delete(FORMAT_KEY.encode(), db=db)
            else:
                txn.put(FORMAT_KEY.encode(), value, db=db)
    finally:
        env.close()


def _make(path: Path) -> None:
    with Ledger.open(path) as log:
        log.append(KeepAliveFailed(subject="r1", id="k1"))


def test_a_new_ledger_records_its_layout(tmp_path: Path) -> None:
    _make(tmp_path / "l")
    assert _raw_format(tmp_path / "l") == FORMAT == b"adminchain-lmdb/1"


def test_a_ledger_without_a_layout_is_version_1_and_marked_on_its_first_write_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l"
    _make(path)
    _set_raw_format(path, None)
    with Ledger.open(path, create=False) as log:  # a reader: reads, and leaves the files alone
        assert log.size() == 1
    assert _raw_format(path) is None
    with Ledger.open(path) as log:
        assert log.size() == 1
    assert _raw_format(path) == FORMAT


def test_an_unknown_layout_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "l"
    _make(path)
    _set_raw_format(path, b"adminchain-lmdb/9")
    for create in (True, False):
        with pytest.raises(
            StorageError, match=r"storage layout adminchain-lmdb/9, not adminchain-lmdb/1"
        ):
            Ledger.open(path, create=create)
    assert _raw_format(path) == b"adminchain-lmdb/9"  # nothing was rewritten


def test_the_cli_refuses_an_unknown_layout_with_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "l"
    _make(path)
    _set_raw_format(path, b"adminchain-lmdb/9")
    result = subprocess.run(
        [sys.executable, "-m", "adminchain", "status", "--ledger", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "adminchain-lmdb/9" in result.stderr


def test_the_layout_setting_belongs_to_the_backend(tmp_path: Path) -> None:
    path = tmp_path / "l"
    _make(path)
    with Ledger.open(path) as log, pytest.raises(StorageError, match="belongs to the backend"):
        log.backend.put_meta(FORMAT_KEY, b"adminchain-lmdb/2")
    assert _raw_format(path) == FORMAT
