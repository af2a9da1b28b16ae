"""base: the generic repository over a MemoryStore table, keyed by each record's `id`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from harbor.errors import conflict, not_found
from harbor.logs import get_logger
from harbor.repo.memory import MemoryStore

log = get_logger(__name__)


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)


class Repository(Generic[T]):
    """Records of one kind. Subclasses set `kind` and add their own queries."""

    kind = "record"

    def __init__(self, store: MemoryStore) -> None:
        self._table = store.table(self.kind)

    def fetch_one(self, key: str) -> T:
        record = self._table.get(key)
        if record is None:
            raise not_found(self.kind, key)
        return record

    def fetch_many(self, where: Callable[[T], bool] | None = None) -> list[T]:
        records = sorted(self._table.values(), key=lambda record: record.id)
        return [record for record in records if where is None or where(record)]

    def store(self, record: T, *, replace: bool = False) -> T:
        if record.id in self._table and not replace:
            raise conflict(f"{self.kind} {record.id} already exists", id=record.id)
        self._table[record.id] = record
        log.debug("stored", kind=self.kind, id=record.id)
        return record

    def store_many(self, records: Iterable[T]) -> list[T]:
        return [self.store(record) for record in records]

    def discard(self, key: str) -> T:
        record = self.fetch_one(key)
        del self._table[key]
        log.debug("discarded", kind=self.kind, id=key)
        return record

    def __len__(self) -> int:
        return len(self._table)
