"""Structured logs: one JSON object per line on stderr, from the ``serve`` logger tree."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER_NAME = "serve"
# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., <extra fields>}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> logging.Logger:
    """Send the ``serve`` logger's records to stderr as JSON lines; returns that logger."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


class RateLimitedWarning:
    """One warning line per ``interval_s`` for a recurring event (a refused call, a limit hit).

    The first occurrence is logged at once; later ones within the interval are only counted,
    and the next line carries ``occurrences``: how many happened since the previous line (so a
    flood costs one line a minute, not one per call, and still shows its size).
    """

    def __init__(self, logger: logging.Logger, message: str, interval_s: float = 60.0) -> None:
        self._logger, self._message, self._interval = logger, message, interval_s
        self._last: float | None = None
        self._count = 0

    def hit(self, **fields: Any) -> bool:
        """Count one occurrence; log it (with ``fields``) unless a line went out within the interval.
        Returns whether a line was written."""
        self._count += 1
        now = time.monotonic()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._logger.warning(self._message, extra={**fields, "occurrences": self._count,
                                                   "next_line_after_s": self._interval})
        self._last, self._count = now, 0
        return True
