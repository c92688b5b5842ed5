"""The operator's own start and stop: kopf's settings, and /metrics.

Two startup handlers, so that kopf retries only the one that failed; kopf starts watching only
after both succeeded. The cleanup handler runs when kopf stops on SIGTERM.
"""

from __future__ import annotations

import os
from typing import Any

import kopf
from aiohttp import web

from mailtrain_operator import framework, metrics

_METRICS_RUNNER = "metrics_runner"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """All of kopf's settings, made once before any watch starts."""
    ours = framework.operator_settings(memo)
    framework.configure(settings, ours)
    scope = ", ".join(ours.namespaces) if ours.namespaces else "all namespaces"
    peering = "standalone" if ours.standalone else f"peering {ours.peering_name!r}"
    logger.info("mailtrain-operator started: watching %s, %s", scope, peering)


@kopf.on.startup()
async def serve_metrics(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    listen = framework.operator_settings(memo).metrics_listen
    try:
        memo[_METRICS_RUNNER] = await metrics.serve(metrics.METRICS.registry, listen)
    except OSError as exc:  # the address is taken or not ours: retrying will not help
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # aiohttp rewords the error
        raise kopf.PermanentError(f"cannot serve /metrics on {listen}: {reason}") from None
    logger.info("serving /metrics on %s", listen)


@kopf.on.cleanup()
async def stop_metrics(memo: kopf.Memo, **_: Any) -> None:
    runner = memo.get(_METRICS_RUNNER)
    if isinstance(runner, web.AppRunner):
        await runner.cleanup()
