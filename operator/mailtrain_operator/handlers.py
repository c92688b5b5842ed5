"""Every kopf handler of the operator, and nothing else: each body hands its work to a domain module.

Registered on kopf's default registry when `framework.run` imports this module. Today there is
only the startup handler; the SenderPool and MailCampaign handlers come with issue 8's later
sections.
"""

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
