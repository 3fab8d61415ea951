"""Logging setup: plain text for terminals and journald, one JSON object per line for collectors."""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime

from exporter.redact import redact_text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry)


class RedactingFormatter(logging.Formatter):
    """The last line of defence: every URL in a record's message, arguments, traceback and stack loses
    its userinfo and query values, whoever logged it (our code redacts at the source already).  The
    record's parts are redacted before ``inner`` formats them, so JSON escaping cannot split a URL."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        clean = copy.copy(record)
        clean.msg, clean.args = redact_text(record.getMessage()), None
        if record.exc_info:
            clean.exc_text = redact_text(self.inner.formatException(record.exc_info))
            clean.exc_info = None
        elif record.exc_text:
            clean.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            clean.stack_info = redact_text(record.stack_info)
        return self.inner.format(clean)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(RedactingFormatter(JsonFormatter()))
    else:
        handler.setFormatter(RedactingFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print every scrape.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
