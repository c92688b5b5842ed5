"""The operator's own start and stop: kopf's settings, the peering objects, and /metrics.

Three startup handlers, so that kopf retries only the one that failed; kopf starts watching only
after all three succeeded. The cleanup handler runs when kopf stops on SIGTERM.
"""

from __future__ import annotations

import os
from typing import Any

import kopf
from aiohttp import web

from mailtrain_operator import framework, metrics, peering

_METRICS_RUNNER = "metrics_runner"
_PEERING_LOOKED = "peering_looked"
# A peering object the operator may not create is looked for again every 2 s for about 30 s before
# it gives up: `helm install` creates the Deployment before the KopfPeering (a kind Helm does not
# know goes last), and GitOps tools may apply them apart.
PEERING_LOOKS, PEERING_LOOK_DELAY = 15, 2.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """All of kopf's settings, made once before any watch starts."""
    ours = framework.operator_settings(memo)
    framework.configure(settings, ours)
    scope = ", ".join(ours.namespaces) if ours.namespaces else "all namespaces"
    peering_mode = (
        "standalone"
        if ours.standalone
        # kopf says "Resuming operations" when this replica becomes the active one, and nothing while
        # it stands by: say here what to expect.
        else f"peering {ours.peering_name!r} with priority {settings.peering.priority} (the oldest live "
        "replica is active, the others stand by)"
    )
    logger.info("mailtrain-operator started: watching %s, %s", scope, peering_mode)


@kopf.on.startup()
async def create_peering_objects(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    ours = framework.operator_settings(memo)
    try:
        created = await peering.ensure_objects(ours)
    except peering.PeeringMissing as exc:
        # Counted apart from kopf's `retry`, which an apiserver error (retried after a minute) raises too.
        memo[_PEERING_LOOKED] = looked = memo.get(_PEERING_LOOKED, 0) + 1
        if looked < PEERING_LOOKS:
            raise kopf.TemporaryError(f"{exc} (looking again)", delay=PEERING_LOOK_DELAY) from None
        raise kopf.PermanentError(str(exc)) from None
    except peering.PeeringUnavailable as exc:
        # Retrying cannot install a CRD or grant a permission: stop, and say why.
        raise kopf.PermanentError(str(exc)) from None
    for what in created:
        logger.info("created the peering object: %s", what)
    # After `configure`, which set the priority (kopf runs startup handlers in order).
    await peering.announce(ours, framework.operator_identity(memo), settings.peering.priority)


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
