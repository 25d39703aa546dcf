"""A replayed `Folder` read the way stored views are (as-of ``status`` and ``policy``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from projections.state import Folder

__all__ = ["FolderSource"]


class FolderSource:
    """A replayed `Folder` as a `projections.api.StateSource` (for as-of ``status``)."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder

    def subjects(self, projection: str) -> Iterator[tuple[str, Any]]:
        return iter(self.folder.states.get(projection, {}).items())

    def state(self, projection: str, subject: str) -> Any | None:
        return self.folder.states.get(projection, {}).get(subject)
