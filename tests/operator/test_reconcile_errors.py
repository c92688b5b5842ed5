"""`framework.counts_reconcile_errors`: every exception that leaves a handler is counted by kind and
then reaches kopf unchanged; and every resource handler of the product wears it.

kopf has no hook for failed handlers, so the count depends on each handler wearing the decorator
(below kopf's own). The last test holds the product to that: a new handler without it fails here.
The counting through a real kopf run is in test_kopf_marks.py.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import kopf
import pytest

from mailtrain_operator import framework
from mailtrain_operator.metrics import METRICS


def _count(kind: str) -> float:
    value = METRICS.registry.get_sample_value("mailtrain_operator_reconcile_errors_total", {"kind": kind})
    return value or 0.0


def test_an_async_handler_is_counted_per_failure_and_kopf_still_sees_the_error() -> None:
    calls: list[int] = []

    @framework.counts_reconcile_errors("MailCampaign")
    async def created(retry: int, **_: Any) -> str:
        calls.append(retry)
        if retry < 2:
            raise kopf.TemporaryError("Redis is not ready", delay=1)
        return "published"

    assert inspect.iscoroutinefunction(created)  # kopf awaits it, rather than running it on a thread
    before, other = _count("MailCampaign"), _count("SenderPool")
    for retry in (0, 1):
        with pytest.raises(kopf.TemporaryError, match="Redis is not ready"):
            asyncio.run(created(retry=retry))
    assert asyncio.run(created(retry=2)) == "published"
    assert calls == [0, 1, 2]
    assert _count("MailCampaign") == before + 2
    assert _count("SenderPool") == other


def test_a_sync_handler_is_counted_too_and_keeps_its_name() -> None:
    @framework.counts_reconcile_errors("SenderPool")
    def applied(**_: Any) -> None:
        raise kopf.PermanentError("spec.redis names no Redis")

    assert not inspect.iscoroutinefunction(applied) and applied.__name__ == "applied"
    before = _count("SenderPool")
    with pytest.raises(kopf.PermanentError):
        applied()
    assert _count("SenderPool") == before + 1


def test_a_kind_must_be_a_kind() -> None:
    with pytest.raises(ValueError, match="is not a Kind"):
        framework.counts_reconcile_errors("mailcampaigns")


def _uncounted(registry: kopf.OperatorRegistry) -> list[str]:
    """Ids of the registry's resource handlers that do not count their errors (kopf keeps them in
    private sub-registries; there is no public listing)."""
    subs = (registry._changing, registry._watching, registry._spawning, registry._indexing)
    handlers = [handler for sub in (*subs, registry._webhooks) for handler in sub.get_all_handlers()]
    return [h.id for h in handlers if not hasattr(h.fn, framework.COUNTED_KIND_ATTRIBUTE)]


def test_the_check_finds_a_handler_that_does_not_count() -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.create("mailtrain.dev", "v1alpha1", "senderpools", registry=registry)
    @framework.counts_reconcile_errors("SenderPool")
    async def counted(**_: Any) -> None: ...

    @framework.counts_reconcile_errors("SenderPool")  # above kopf's decorator: kopf holds the bare one
    @kopf.on.update("mailtrain.dev", "v1alpha1", "senderpools", registry=registry)
    async def wrongly_ordered(**_: Any) -> None: ...

    @kopf.timer("mailtrain.dev", "v1alpha1", "mailcampaigns", interval=5, registry=registry)
    async def bare(**_: Any) -> None: ...

    assert sorted(found.rpartition(".")[2] for found in _uncounted(registry)) == ["bare", "wrongly_ordered"]


def test_every_handler_of_the_operator_counts_its_errors() -> None:
    from mailtrain_operator import handlers  # noqa: F401 - registers them on kopf's default registry

    assert _uncounted(kopf.get_default_registry()) == []
