"""Re-reads sender.toml when it changes, so limits and the throttle change without a restart.

Kubernetes updates a mounted ConfigMap by swapping a symlink, so the file is
compared by content, not by modification time. A new file that does not
validate is rejected with one log line and the running configuration is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from mailtrain_sender.config import ConfigError, SenderConfig, load_config
from mailtrain_sender.metrics import Metrics

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # seconds; a ConfigMap update reaches the pod's volume within about a minute anyway


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


async def watch_config(path: Path, apply: Callable[[SenderConfig], None], metrics: Metrics) -> None:
    seen = _digest(path)
    while True:
        await asyncio.sleep(POLL_INTERVAL)
        current = _digest(path)
        if current is None or current == seen:
            continue
        seen = current
        try:
            config = load_config(path)
        except ConfigError as exc:
            metrics.config_reloads.labels(metrics.pool, "rejected").inc()
            log.error("new configuration rejected, keeping the running one: %s", exc)
            continue
        apply(config)
        metrics.config_reloads.labels(metrics.pool, "applied").inc()
