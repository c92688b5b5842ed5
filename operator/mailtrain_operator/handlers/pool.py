"""kopf handlers of the pool kind (thin: each hands its work to a domain module, `pools/`).

- create / update / resume of a SenderPool: apply its children (`pools.apply.reconcile`); a refused
  spec is a Warning Event, and a condition written by the status loop, never a retry loop.
- a daemon per SenderPool: its status (`pools.status_loop`), the only writer of it.
- every event of a Deployment the operator manages: put it back if it drifted (a hand edit of its
  replicas, or its deletion), and wake its pool's status loop. The pools are kept in a kopf index,
  so this costs no request unless something must be put back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from mailtrain_operator import framework, kube
from mailtrain_operator.api import GROUP, VERSION
from mailtrain_operator.pools import apply, names, status_loop
from mailtrain_operator.pools.builders import PoolRef
from mailtrain_operator.pools.status import APPLY_FAILED, Problem
from mailtrain_operator.pools.tracking import PoolTracks

POOLS = "senderpools"
RETRY_AFTER = 5.0  # seconds, after an apiserver error a retry may fix
TRACKS = PoolTracks()


@kopf.index(GROUP, VERSION, POOLS)
@framework.counts_reconcile_errors("SenderPool")
def sender_pools(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Any, apply.PoolSnapshot]:
    return {(namespace, name): apply.PoolSnapshot.from_body(body)}


@kopf.on.resume(GROUP, VERSION, POOLS)
@kopf.on.create(GROUP, VERSION, POOLS)
@kopf.on.update(GROUP, VERSION, POOLS)
@framework.counts_reconcile_errors("SenderPool")
async def reconcile_pool(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    pool = PoolRef.from_body(body)
    generation = int(body["metadata"]["generation"])
    try:
        refusal = await apply.reconcile(pool, body["spec"], framework.operator_settings(memo))
    except (ApiException, HTTPError, OSError) as exc:
        why = f"applying the pool's children: {kube.refusal(exc) if isinstance(exc, ApiException) else exc}"
        TRACKS.get(pool.uid).failed(generation, Problem(APPLY_FAILED, why))
        raise kopf.TemporaryError(why, delay=RETRY_AFTER) from None
    TRACKS.get(pool.uid).handled(generation, refusal)
    if refusal is not None:
        logger.warning("generation %d not applied: %s: %s", generation, refusal.reason, refusal.message)
        kopf.warn(body, reason=refusal.reason, message=refusal.message)
    else:
        logger.info("generation %d applied", generation)


@kopf.daemon(GROUP, VERSION, POOLS, cancellation_backoff=5, cancellation_timeout=10)
@framework.counts_reconcile_errors("SenderPool")
async def pool_status(stopped: kopf.DaemonStopped, body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    pool = PoolRef.from_body(body)
    track = TRACKS.get(pool.uid)

    def warn(reason: str, message: str) -> None:
        kopf.warn(body, reason=reason, message=message)

    async def wake_when_stopped() -> None:  # the loop then ends at once, rather than being cancelled
        await stopped.wait()
        track.wake.set()

    waker = asyncio.create_task(wake_when_stopped())
    try:
        await status_loop.keep_status(
            pool, body, track, stopped=lambda: bool(stopped), warn=warn, logger=logger
        )
    finally:
        waker.cancel()
        TRACKS.forget(pool.uid)


@kopf.on.event("apps", "v1", "deployments", labels={names.MANAGED_BY_LABEL: names.MANAGER})
@framework.counts_reconcile_errors("SenderPool")
async def sender_deployment_event(
    event: kopf.RawEvent,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    logger: kopf.Logger,
    sender_pools: kopf.Index[Any, apply.PoolSnapshot] | None = None,  # kopf passes its index
    **_: Any,
) -> None:
    assert sender_pools is not None
    found = sender_pools.get((namespace, labels.get(names.POOL_LABEL, "")), ())
    pool = next(iter(found), None)
    if pool is None or pool.deleting:
        return  # its pool is gone or going; the garbage collector takes the Deployment
    if event["object"]["metadata"]["name"] != names.deployment_name(pool.ref.name):
        return  # another Deployment that carries the pool's labels: not the pool's to keep
    TRACKS.wake(pool.ref.uid)
    actual = None if event["type"] == "DELETED" else dict(event["object"])
    try:
        repaired = await apply.repair_deployment(pool, actual, framework.operator_settings(memo))
    except (ApiException, HTTPError, OSError) as exc:
        # kopf does not retry watch-event handlers: the Deployment's next event, or the pool's next
        # reconcile, tries again.
        why = kube.refusal(exc) if isinstance(exc, ApiException) else str(exc)
        logger.warning("cannot put back the Deployment of SenderPool %s: %s", pool.ref.name, why)
        return
    if repaired:
        logger.info("Deployment of SenderPool %s put back as the pool specifies it", pool.ref.name)
