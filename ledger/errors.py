"""The one error tree of adminchain: every failure a caller can act on is a `LedgerError`.

Storage errors are translated where they happen (``raise ... from e``), so callers never
catch backend exceptions. The CLI maps each class to one exit status (SPEC §5).
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "InvalidEventError",
    "LedgerError",
    "LedgerNotFoundError",
    "NotFoundError",
    "ProofError",
    "SignatureError",
    "StorageError",
    "StrictRefusedError",
    "UsageError",
]


class LedgerError(Exception):
    """Root of every error adminchain raises on purpose."""


class UsageError(LedgerError, ValueError):
    """A request that cannot be served as asked (bad position, bad option value)."""


class InvalidEventError(LedgerError, ValueError):
    """An event failed validation. Names the input line (1-based) and the field.

    A batch holding one invalid event is rejected whole: nothing is stored.
    """

    def __init__(self, detail: str, *, line: int | None = None, field: str | None = None) -> None:
        self.detail = detail
        self.line = line
        self.field = field
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field `{field}`")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {detail}" if prefix else detail)

    def at_line(self, line: int) -> InvalidEventError:
        """The same error, located at `line` of the caller's input."""
        return type(self)(self.detail, line=line, field=self.field)


class SignatureError(InvalidEventError):
    """An operator event is unsigned, wrongly signed or signed by an unknown key."""


class StrictRefusedError(LedgerError):
    """A strict append was refused: the current projection would reject an event."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.detail = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)

    def at_line(self, line: int | None) -> StrictRefusedError:
        """The same refusal, located at `line` of the caller's input."""
        return type(self)(self.detail, line=line)


class StorageError(LedgerError):
    """The storage backend failed (disk full, map full beyond its limit, I/O error)."""


class BackendUnavailableError(StorageError):
    """The backend cannot be reached or opened (server down, missing driver)."""


class NotFoundError(LedgerError, LookupError):
    """A position, checkpoint or ledger that does not exist."""


class LedgerNotFoundError(NotFoundError, BackendUnavailableError):
    """There is no ledger where one was named (a bad ``--ledger``): nothing was created."""


class ProofError(LedgerError, ValueError):
    """A Merkle proof, checkpoint or signed note does not verify."""
