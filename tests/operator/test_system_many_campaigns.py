"""Two hundred MailCampaigns applied at once, end to end: the operator as a process, a SenderPool of two
sender pods on the local node, the test's redis-server and a recording SMTP sink.

Every campaign reaches Completed, every recipient arrives once, and the operator's writes to the
apiserver, counted by the apiserver itself (`apiserver_request_total`), stay within the budget per
campaign that docs/architecture.md states ("Status writes"). Figures are printed with `-s`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import redis
import yaml

from tests.cluster.helpers import eventually
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import OperatorProcess
from tests.harness.smtp_sink import ReceivedMessage, RecordingSink
from tests.operator import apiserver_writes, examples
from tests.operator.campaign_rig import inline
from tests.operator.pool_support import create_pool, ready_pool, sender_pool

CAMPAIGNS = 200
RECIPIENTS = 3  # each
PROCESSES = 2
POOL = "many"
# The operator's writes per campaign (docs/architecture.md, "Writes to the apiserver per campaign"), from
# `kubectl apply` to Completed: kopf's finalizer and diff base; the Sending and Completed statuses, and a
# progress status for each further interval the campaign spends sending (none, for one this small); the
# Started and Completed Events. kopf may send one of its two again: the finalizer when the apiserver
# refused its JSON patch (422: the driver's first status write came in between), or the diff base when
# its own write had not come back through the watch within kopf's consistency timeout. To delete a
# campaign: the finalizer's removal.
KOPF_WRITES, KOPF_RETRIES = 2, 1
STATUS_WRITES = 2  # plus the progress statuses
EVENTS = ("Started", "Completed")
DELETE_WRITES = 1
PROGRESS_INTERVAL = 5  # seconds, settings.progress_interval's default, which the module's operator keeps
OPERATOR_RESOURCES = frozenset({"mailcampaigns", "events"})
CLIENT_WRITES = frozenset(
    {
        ("mailcampaigns", "", "APPLY"),  # kubectl's
        ("mailcampaigns", "", "DELETE"),  # kubectl's
        # The namespace controller's, emptying the namespaces that earlier tests deleted: the operator
        # never deletes an Event, and apiserver_request_total does not say who asked.
        ("events", "", "DELETE"),
    }
)


def campaigns_yaml(names: list[str]) -> str:
    return yaml.safe_dump_all(
        examples.campaign(
            name,
            senderPool=POOL,
            text=f"Hello {{{{ name }}}}, this is {name}.\n",
            recipients={"inline": inline(RECIPIENTS, prefix=f"{name}-")},
        )
        for name in names
    )


def message_origin(message: ReceivedMessage) -> tuple[str, int]:
    """(campaign uid, recipient index) from the Message-ID the sender writes: campaign.index@domain."""
    campaign, _, index = message.message_id.rpartition("@")[0].rpartition(".")
    return campaign, int(index)


def progress_writes_allowed(status: Json) -> int:
    """Progress statuses a campaign may have had between Sending and Completed: one for each step
    before the one that saw it complete, and steps are a progress interval apart. Both times have
    whole seconds, so the span may read up to a second short."""
    span = (parse_time(status["completedAt"]) - parse_time(status["startedAt"])).total_seconds()
    return max(0, math.ceil((span - 1) / PROGRESS_INTERVAL) - 1)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def operator_writes(
    controlplane: ControlPlane, before: Counter[apiserver_writes.Key]
) -> Counter[apiserver_writes.Key]:
    """The operator's writes since `before`: campaigns and Events, less kubectl's creates and deletes."""
    found = apiserver_writes.between(before, apiserver_writes.read(controlplane), OPERATOR_RESOURCES)
    return Counter({k: n for k, n in found.items() if k[:3] not in CLIENT_WRITES})


def test_two_hundred_campaigns_at_once_all_complete_every_recipient_once_within_the_write_budget(
    operator: OperatorProcess,
    controlplane: ControlPlane,
    local_node: LocalNode,
    pool_namespace: str,
    redis_url: str,
    make_recording_sink: Callable[..., RecordingSink],
    tmp_path: Path,
) -> None:
    kube, ns = controlplane.api, pool_namespace
    campaigns_path = f"/apis/mailtrain.dev/v1alpha1/namespaces/{ns}/mailcampaigns"
    sink = make_recording_sink(record_raw=False)
    smtp = {"host": net.LOOPBACK, "port": sink.port, "security": "none", "maxConnections": 4}
    create_pool(
        kube,
        ns,
        sender_pool(POOL, sink.port, queue={"processes": PROCESSES}, redis={"url": redis_url}, smtp=smtp),
    )
    ready_pool(kube, ns, POOL, PROCESSES)

    names = [f"many-{i:03d}" for i in range(CAMPAIGNS)]
    manifest = tmp_path / "campaigns.yaml"
    manifest.write_text(campaigns_yaml(names))
    before = apiserver_writes.read(controlplane)
    applied_at = time.monotonic()
    controlplane.kubectl("apply", "--server-side", "-n", ns, "-f", str(manifest))
    applied = time.monotonic() - applied_at

    def all_completed() -> list[Json] | None:
        found = kube.list(campaigns_path)
        phases = Counter((c.get("status") or {}).get("phase") for c in found)
        return found if phases == Counter({"Completed": CAMPAIGNS}) else None

    completed = eventually(all_completed, timeout=120, what=f"{CAMPAIGNS} campaigns Completed", interval=0.5)
    done = time.monotonic() - applied_at

    # Every recipient of every campaign at the sink, once.
    uids = {c["metadata"]["uid"]: c["metadata"]["name"] for c in completed}
    messages = sink.wait_for(CAMPAIGNS * RECIPIENTS, timeout=30)
    counts = Counter(map(message_origin, messages))
    expected = {(uid, i) for uid in uids for i in range(RECIPIENTS)}
    assert set(counts) == expected, sorted(set(counts) ^ expected)[:5]
    twice = sorted((uids[uid], i, n) for (uid, i), n in counts.items() if n > 1)
    assert not twice, f"{len(twice)} recipients arrived more than once: {twice[:5]}"
    for found in completed:
        status = found["status"]
        assert (status["total"], status["sent"], status["pending"]) == (RECIPIENTS, RECIPIENTS, 0), status

    # The Completed Event is posted after the Completed status; the writes are read once all are in.
    def campaign_events() -> list[Json] | None:
        found = kube.list(f"/api/v1/namespaces/{ns}/events")
        completed = {e["involvedObject"]["name"] for e in found if e["reason"] == "Completed"}
        return found if completed >= set(names) else None

    events = eventually(campaign_events, timeout=30, what=f"{CAMPAIGNS} Completed Events")
    ours = Counter(
        (e["involvedObject"]["name"], e["reason"])
        for e in events
        if e["involvedObject"]["kind"] == "MailCampaign"
    )
    wanted = Counter({(name, reason): 1 for name in names for reason in EVENTS})
    assert ours == wanted, sorted((ours - wanted) + (wanted - ours))[:5]
    others = sum(1 for e in events if e["involvedObject"]["kind"] != "MailCampaign")  # the pods', say

    life = operator_writes(controlplane, before)
    progress = sum(progress_writes_allowed(c["status"]) for c in completed)
    kopf = sum(n for (resource, sub, _, _), n in life.items() if (resource, sub) == ("mailcampaigns", ""))
    status_writes = sum(n for (_, sub, _, _), n in life.items() if sub == "status")
    event_writes = sum(n for key, n in life.items() if key[0] == "events")
    wrote = sum(life.values())
    print(
        f"\nFIGURE kubectl apply of {CAMPAIGNS} campaigns: {applied:.1f} s; all Completed {done:.1f} s after"
    )
    print(f"FIGURE operator writes, apply to Completed: {wrote} ({wrote / CAMPAIGNS:.3f} a campaign)")
    print(f"FIGURE   {apiserver_writes.describe(life)}; progress statuses allowed {progress}")
    assert status_writes <= STATUS_WRITES * CAMPAIGNS + progress, apiserver_writes.describe(life)
    assert kopf <= (KOPF_WRITES + KOPF_RETRIES) * CAMPAIGNS, apiserver_writes.describe(life)
    assert event_writes <= len(EVENTS) * CAMPAIGNS + others, apiserver_writes.describe(life)

    before_delete = apiserver_writes.read(controlplane)
    controlplane.kubectl("delete", "-n", ns, "mailcampaigns", "--all", "--wait=false")
    eventually(lambda: not kube.list(campaigns_path), timeout=60, what="every campaign deleted", interval=0.5)
    deleting = operator_writes(controlplane, before_delete)
    print(f"FIGURE operator writes to delete them: {apiserver_writes.describe(deleting)}")
    assert sum(deleting.values()) <= DELETE_WRITES * CAMPAIGNS, apiserver_writes.describe(deleting)
    with redis.Redis.from_url(redis_url) as client:
        left = [key for key in client.scan_iter("mt:{c:*", count=1000)]
    assert not left, f"{len(left)} campaign keys left in Redis, e.g. {left[:3]}"
    assert "Traceback" not in operator.log_text()
