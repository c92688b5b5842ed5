"""The operator's own command with one test-only handler more: a probe whose effects show which replica
handled an object, with kopf's marks (finalizer, annotations), an Event and a counted error.

The probe handles ConfigMaps labelled `mailtrain.test/probe`, never the operator's kinds, so the
product's handlers (all of them are loaded too) and the probe do not meet. On create it fails while
the ConfigMap's `data.fail` is "yes" (a retried error, counted by `counts_reconcile_errors`), then
records `handled-by-<POD_ID>` in the ConfigMap's data and posts an Event. A delete handler makes kopf
put its finalizer on every probed ConfigMap.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from mailtrain_operator import cli, framework

PROBE_LABEL = "mailtrain.test/probe"
IDENTITY = os.environ["POD_ID"]


@kopf.on.create("", "v1", "configmaps", labels={PROBE_LABEL: kopf.PRESENT})
@framework.counts_reconcile_errors("ConfigMap")
async def probe(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    if (body.get("data") or {}).get("fail") == "yes":
        raise kopf.TemporaryError("the probe was asked to fail", delay=1)
    patch["data"] = {f"handled-by-{IDENTITY}": "yes"}
    kopf.info(body, reason="ProbeHandled", message=f"handled by {IDENTITY}")


@kopf.on.delete("", "v1", "configmaps", labels={PROBE_LABEL: kopf.PRESENT})
async def probe_deleted(**_: Any) -> None:
    pass


if __name__ == "__main__":
    cli.main()
