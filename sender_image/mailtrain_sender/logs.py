"""Logging: one line per event, naming the campaign where there is one; JSON on request."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class _Defaults(logging.Filter):
    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "campaign"):
            record.campaign = "-"
        record.worker = self.worker
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "worker": getattr(record, "worker", None),
        }
        if getattr(record, "campaign", "-") != "-":
            entry["campaign"] = record.campaign  # type: ignore[attr-defined]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup(fmt: str, level: str, worker: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Defaults(worker))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(campaign)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Their per-connection chatter would drown ours at thousands of messages per second.
    for noisy in ("aiosmtplib", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
