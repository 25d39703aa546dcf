"""The files of an embedded ledger, checked before LMDB maps them (SPEC §4, issue 13.5).

LMDB reads and writes its files through memory maps: a fault there is a signal (SIGBUS on a
full disk or a truncated file, an abort on a zeroed page), not an error a caller can handle.
So what LMDB needs is checked first, and each problem becomes one `StorageError` (or
`LedgerNotFoundError`) that says what is wrong with which file:

- the ledger path must be a directory (not a regular file, not a symlink loop);
- a new ledger needs `CREATE_NEEDS` bytes free (its lock file is written through a map);
- every page of ``data.mdb`` up to the last one in use must not be all zeros (`zeroed_page`).
"""

from __future__ import annotations

import errno
import mmap
import os
import resource
from pathlib import Path
from typing import Final

from ledger.errors import BackendUnavailableError, LedgerNotFoundError, StorageError

__all__ = ["check_directory", "check_space", "disk_note", "zeroed_page"]

CREATE_NEEDS: Final = 1 << 20
"""Bytes a new ledger needs free: its lock file (8 kB, written through a map: a full disk
would kill the process with SIGBUS), its first pages, and room for the first appends."""
LOW_SPACE: Final = 1 << 20


def free_bytes(path: Path) -> int | None:
    """Bytes available to this user on the file system holding `path` (or its parent)."""
    for where in (path, *path.parents):
        try:
            stat = os.statvfs(where)
        except OSError:
            continue
        return stat.f_bavail * stat.f_frsize
    return None


def disk_note(path: Path) -> str:
    """Why a write to the ledger at `path` may have failed, when one of these is why: ``" (the
    disk is full: N bytes free)"``, or the process's file size limit is reached."""
    free = free_bytes(path)
    if free is not None and free < LOW_SPACE:
        return f" (the disk holding {path} is full: {free} bytes free)"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        try:
            used = (path / "data.mdb").stat().st_size
        except OSError:
            used = 0
        if used + LOW_SPACE > limit:
            return f" (the file size limit of this process, {limit} bytes, is reached: full)"
    return ""


def check_directory(path: Path, *, create: bool) -> None:
    """`path` names a ledger directory, or (with `create`) a place one can be made."""
    try:
        path.stat()
    except FileNotFoundError:
        if not create:
            raise LedgerNotFoundError(
                f"no ledger at {path} (create one by appending to it)"
            ) from None
        return
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BackendUnavailableError(f"{path} is a symbolic link loop, not a ledger") from e
        raise BackendUnavailableError(f"cannot open the ledger at {path}: {e.strerror}") from e
    if not path.is_dir():
        raise BackendUnavailableError(
            f"{path} is a file, not a ledger directory (an embedded ledger is a directory)"
        )


def check_space(path: Path) -> None:
    """Refuse to create a ledger on a disk without `CREATE_NEEDS` bytes free."""
    free = free_bytes(path)
    if free is not None and free < CREATE_NEEDS:
        raise StorageError(
            f"cannot create a ledger at {path}: the disk is full ({free} bytes free, a new "
            f"ledger needs {CREATE_NEEDS})"
        )


def zeroed_page(data: Path, pages: int, page_size: int) -> int | None:
    """The first page among 0..`pages`-1 of `data` that is all zeros, if any.

    Every page LMDB has written starts with its own page number and flags, so a page of zeros
    is damage (a lost write, a zeroed block): LMDB would abort the process on reaching it.
    """
    if pages <= 0:
        return None
    zero = bytes(page_size)
    with data.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        last = min(pages, len(view) // page_size)
        for number in range(last):
            at = number * page_size
            if view[at : at + 16] == zero[:16] and view[at : at + page_size] == zero:
                return number
    return None
