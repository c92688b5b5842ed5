"""kopf handlers of the campaign kind (thin: each hands its work to `mailtrain_operator.campaigns`).

One daemon per MailCampaign drives it (publish, pause, resume, harvest progress into status);
watch events of campaigns and pools only wake that daemon, so a spec edit or a new pool is acted
on at once rather than at the next timed step. The finalizer removes the campaign's Redis keys.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from mailtrain_operator import framework
from mailtrain_operator.api import GROUP, VERSION
from mailtrain_operator.campaigns import deletion
from mailtrain_operator.campaigns.lifecycle import CampaignDriver
from mailtrain_operator.campaigns.runtime import CampaignRuntime
from mailtrain_operator.campaigns.status import Note

_RUNTIME = "campaign_runtime"
# A driver in the middle of a step when its campaign is deleted or the operator stops is cancelled
# at once (an interrupted publish is redone in full, so that is safe); kopf waits this many seconds
# for it to end. A waiting driver ends by itself, without being cancelled.
CANCELLATION_TIMEOUT = 10.0
DELETE_BACKOFF = (2.0, 60.0)


def _runtime(memo: kopf.Memo) -> CampaignRuntime:
    found = memo[_RUNTIME]
    assert isinstance(found, CampaignRuntime)
    return found


def _pool_lookup(kwargs: dict[str, Any]) -> Callable[[str, str], Mapping[str, Any] | None]:
    """A lookup in the SenderPool index (kopf passes an index as the keyword named after it)."""
    pools: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["senderpool_specs"]

    def pool_spec(namespace: str, name: str) -> Mapping[str, Any] | None:
        store = pools.get((namespace, name))
        return next(iter(store), None) if store is not None else None

    return pool_spec


@kopf.on.startup()
async def campaign_runtime(memo: kopf.Memo, **_: Any) -> None:
    memo[_RUNTIME] = CampaignRuntime(framework.operator_settings(memo))


@kopf.on.cleanup()
async def close_campaign_redis_clients(memo: kopf.Memo, **_: Any) -> None:
    await _runtime(memo).clients.close()


@kopf.index(GROUP, VERSION, "senderpools")
@framework.counts_reconcile_errors("SenderPool")
async def senderpool_specs(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str | None, str], Any]:
    """Every SenderPool's spec by (namespace, name): campaigns read their pool from memory."""
    return {(namespace, name): copy.deepcopy(dict(spec))}


@kopf.index(GROUP, VERSION, "mailcampaigns")
@framework.counts_reconcile_errors("MailCampaign")
async def campaigns_by_pool(
    namespace: str | None, uid: str, spec: kopf.Spec, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> dict[tuple[str | None, str], str]:
    """Campaign uids by (namespace, pool), so a pool's events wake its campaigns.

    kopf calls an indexer on every watch event of a campaign, quietly (an on.event handler would
    log a line per event, and every status write is one), after refreshing the body the driver
    reads: so this is also where a new spec, or the deletion, wakes the campaign's driver.
    """
    wakers = _runtime(memo).wakers
    if wakers.changed(uid, int(meta.get("generation") or 0), meta.get("deletionTimestamp")):
        wakers.wake(uid)  # not for our own status writes: those leave the generation alone
    return {(namespace, str(spec.get("senderPool", "default"))): uid}


@kopf.on.event(GROUP, VERSION, "senderpools")
@framework.counts_reconcile_errors("SenderPool")
async def wake_campaigns_of_pool(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A pool appeared, changed or went: its campaigns look again at once (after the index update)."""
    index: kopf.Index[tuple[str | None, str], str] = kwargs["campaigns_by_pool"]
    for uid in index.get((namespace, name), ()):
        _runtime(memo).wakers.wake(uid)


@kopf.daemon(GROUP, VERSION, "mailcampaigns", id="drive", cancellation_timeout=CANCELLATION_TIMEOUT)
@framework.counts_reconcile_errors("MailCampaign")
async def drive_campaign(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    def post(note: Note) -> None:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message)

    driver = CampaignDriver(_runtime(memo), body, pool_spec=_pool_lookup(kwargs), post=post, logger=logger)
    await driver.run(lambda: bool(stopped), lambda: stopped.wait())


@kopf.on.delete(GROUP, VERSION, "mailcampaigns", id="remove-redis-keys")
@framework.counts_reconcile_errors("MailCampaign")
async def remove_redis_keys(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    retry: int,
    **kwargs: Any,
) -> None:
    result = await deletion.remove_keys(_runtime(memo), body, _pool_lookup(kwargs))
    if isinstance(result, deletion.Blocked):
        await deletion.report_blocked(body, result)
        raise kopf.TemporaryError(
            result.message, delay=min(DELETE_BACKOFF[1], DELETE_BACKOFF[0] * 2.0**retry)
        )
    logger.info(result)
