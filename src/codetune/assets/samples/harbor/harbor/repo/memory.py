"""memory: an in-process store of named tables, with snapshots for all-or-nothing changes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class MemoryStore:
    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Any]] = {}

    def table(self, name: str) -> dict[str, Any]:
        return self._tables.setdefault(name, {})

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._tables)

    def restore(self, snapshot: dict[str, dict[str, Any]]) -> None:
        for name, rows in snapshot.items():
            table = self.table(name)
            table.clear()
            table.update(rows)

    @contextmanager
    def transaction(self) -> Iterator[MemoryStore]:
        """Changes made inside the block are undone if it raises."""
        saved = self.snapshot()
        try:
            yield self
        except BaseException:
            self.restore(saved)
            raise
