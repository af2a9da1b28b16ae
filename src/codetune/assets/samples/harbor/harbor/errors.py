"""errors: the one exception type of harbor, with a stable machine-readable code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class HarborError(Exception):
    """A failure the caller can act on.

    `code` is stable and documented (the API returns it); `detail` is for humans; `context`
    carries the ids involved so logs and responses can name them.
    """

    code: str
    detail: str = ""
    context: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.context:
            return f"{self.code}: {self.detail}"
        pairs = ", ".join(f"{key}={value}" for key, value in sorted(self.context.items()))
        return f"{self.code}: {self.detail} ({pairs})"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "context": dict(self.context)}


NOT_FOUND = "not_found"
CONFLICT = "conflict"
INVALID = "invalid"
FORBIDDEN = "forbidden"

STATUS_BY_CODE = {NOT_FOUND: 404, CONFLICT: 409, INVALID: 422, FORBIDDEN: 403}


def not_found(kind: str, key: str) -> HarborError:
    return HarborError(code=NOT_FOUND, detail=f"no {kind} with id {key}", context={"id": key})


def conflict(detail: str, **context: Any) -> HarborError:
    return HarborError(code=CONFLICT, detail=detail, context=context)


def invalid(detail: str, **context: Any) -> HarborError:
    return HarborError(code=INVALID, detail=detail, context=context)
