"""The startup handler: every kopf setting is made here, once, before any watch starts."""

from __future__ import annotations

from typing import Any

import kopf

from mailtrain_operator import framework


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """All of kopf's settings, made once before any watch starts."""
    ours = framework.operator_settings(memo)
    framework.configure(settings, ours)
    scope = ", ".join(ours.namespaces) if ours.namespaces else "all namespaces"
    peering = "standalone" if ours.standalone else f"peering {ours.peering_name!r}"
    logger.info("mailtrain-operator started: watching %s, %s", scope, peering)
