"""The files of an embedded ledger, checked before LMDB maps them (SPEC §4, issue 13.5).

LMDB reads and writes its files through memory maps: a fault there is a signal (SIGBUS on a
full disk or a truncated file, an abort on a zeroed page), not an error a caller can handle.
So what LMDB needs is checked first, and each problem becomes one `StorageError` (or
`LedgerNotFoundError`) that says what is wrong with which file:

- the ledger path must be a directory (not a regular file, not a symlink loop);
- a new ledger needs `CREATE_NEEDS` bytes free (its lock file is written through a map);
- every page of ``data.mdb`` up to the last one in use must not be all zeros (`zeroed_page`),
  unless LMDB's own free list holds it: a page a transaction took at the end of the file and
  freed again before its commit (after deletions: a staged append removed) is never written.
"""

from __future__ import annotations

import errno
import mmap
import os
import resource
import struct
from pathlib import Path
from typing import Final

from ledger.errors import BackendUnavailableError, LedgerNotFoundError, StorageError

__all__ = ["check_directory", "check_space", "disk_note", "free_pages", "zeroed_page"]

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
    """The first page among 0..`pages`-1 of `data` that is all zeros and not free, if any.

    Every page LMDB has written starts with its own page number and flags, so a page of zeros
    that is in use is damage (a lost write, a zeroed block): LMDB would abort the process on
    reaching it. A free page may be all zeros (taken at the end of the file and freed in the
    same transaction, it was never written): the free list (`free_pages`) is read to tell, only
    when there are zero pages at all.
    """
    if pages <= 0:
        return None
    zero = bytes(page_size)
    with data.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        last = min(pages, len(view) // page_size)
        zeroed = [
            number
            for number in range(last)
            if view[number * page_size : number * page_size + 16] == zero[:16]
            and view[number * page_size : (number + 1) * page_size] == zero
        ]
        if not zeroed:
            return None
        try:
            free = free_pages(view, page_size)
        except (struct.error, ValueError, IndexError):
            return zeroed[0]  # the free list itself cannot be read: name the first
    return next((number for number in zeroed if number not in free), None)


_P_BRANCH: Final = 0x01
_P_LEAF: Final = 0x02
_F_BIGDATA: Final = 0x01
_META_MAGIC: Final = 0xBEEFC0DE


def free_pages(view: mmap.mmap | bytes, page_size: int) -> set[int]:
    """The page numbers LMDB's free list holds, read from the file (LMDB 0.9's layout on a
    64-bit build: the newer of the two meta pages names the root of the free-list tree, whose
    records are lists of page numbers, the long ones on overflow pages)."""
    metas = []
    for number in (0, 1):
        at = number * page_size
        magic = struct.unpack_from("<I", view, at + 16)[0]
        if magic != _META_MAGIC:
            raise ValueError(f"meta page {number} has no LMDB magic")
        root = struct.unpack_from("<Q", view, at + 80)[0]  # mm_dbs[FREE_DBI].md_root
        txnid = struct.unpack_from("<Q", view, at + 144)[0]
        metas.append((txnid, root))
    _, root = max(metas)
    free: set[int] = set()
    pending = [] if root == (1 << 64) - 1 else [root]  # P_INVALID: an empty free list
    seen: set[int] = set()
    while pending:
        number = pending.pop()
        if number in seen:
            raise ValueError(f"free-list page {number} is reached twice")
        seen.add(number)
        at = number * page_size
        flags, lower = struct.unpack_from("<HH", view, at + 10)
        count = (lower - 16) >> 1
        pointers = struct.unpack_from(f"<{count}H", view, at + 16)
        for pointer in pointers:
            node = at + pointer
            lo, hi, node_flags, key_size = struct.unpack_from("<HHHH", view, node)
            if flags & _P_BRANCH:
                pending.append(lo | hi << 16 | node_flags << 32)
                continue
            if not flags & _P_LEAF:
                raise ValueError(f"free-list page {number} is neither a branch nor a leaf")
            size = lo | hi << 16
            start = node + 8 + key_size
            if node_flags & _F_BIGDATA:  # the list is on overflow pages
                start = struct.unpack_from("<Q", view, start)[0] * page_size + 16
            listed = struct.unpack_from("<Q", view, start)[0]
            if (listed + 1) * 8 > size:
                raise ValueError(f"a free list on page {number} is longer than its record")
            free.update(struct.unpack_from(f"<{listed}Q", view, start + 8))
    return free
