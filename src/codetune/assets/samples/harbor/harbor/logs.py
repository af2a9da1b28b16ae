"""logs: structured logging with one call per module, `log = get_logger(__name__)`."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_CONFIGURED = False


class KeyValueFormatter(logging.Formatter):
    """One line per record: time, level, logger, message, then sorted key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        extra = " ".join(f"{key}={json.dumps(value)}" for key, value in sorted(fields.items()))
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name} {record.getMessage()}"
        return f"{line} {extra}" if extra else line


class HarborLogger(logging.LoggerAdapter):
    """A logger whose calls take keyword fields: `log.info("booked", booking_id=b.id)`."""

    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        fields = {key: kwargs.pop(key) for key in list(kwargs) if key not in _RESERVED}
        kwargs.setdefault("extra", {})["fields"] = fields
        return msg, kwargs


_RESERVED = {"exc_info", "stack_info", "stacklevel", "extra"}


def configure(level: str = "INFO") -> None:
    global _CONFIGURED
    if _CONFIGURED:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("harbor")
    root.addHandler(handler)
    root.setLevel(level)
    _CONFIGURED = True


def get_logger(name: str) -> HarborLogger:
    return HarborLogger(logging.getLogger(name), {})
