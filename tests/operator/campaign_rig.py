"""What the MailCampaign tests share: the operator as a real process, a SenderPool on the test's Redis,
real sender processes for that pool, and reading campaigns, Events and the sink.

The pools have `queue.processes: 0`, so their Deployments run no pods: the test starts the pool's
senders itself, as processes it can kill and inspect, under the pool's name in Redis
(`<namespace>/<pool>`, as the pool's sender.toml names it).
"""

from __future__ import annotations

import ssl
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mailtrain_operator import pool_redis
from tests.cluster.helpers import eventually
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.operator_process import OperatorProcess
from tests.harness.senders import SenderFleet, SenderProcess
from tests.harness.smtp_sink import ReceivedMessage, RecordingSink

CAMPAIGNS = "/apis/mailtrain.dev/v1alpha1/namespaces/{ns}/mailcampaigns"
POOLS = "/apis/mailtrain.dev/v1alpha1/namespaces/{ns}/senderpools"


@dataclass
class CampaignRig:
    controlplane: ControlPlane
    namespace: str
    redis_url: str
    sink: RecordingSink
    root: Path
    operators: list[OperatorProcess] = field(default_factory=list)
    fleets: list[SenderFleet] = field(default_factory=list)

    # -- processes -------------------------------------------------------------------------------------------

    def operator(self, **settings: Any) -> OperatorProcess:
        """Start the operator; settings are MAILTRAIN_OPERATOR_* without the prefix (progress_interval=1)."""
        found = OperatorProcess(
            self.controlplane,
            (self.namespace,),
            self.root / f"operator-{len(self.operators)}",
            {key: str(value) for key, value in settings.items()},
        )
        self.operators.append(found)
        return found.start()

    def senders(self, pool: str, count: int = 2, **overrides: Any) -> list[SenderProcess]:
        fleet = SenderFleet(
            self.root / f"senders-{pool}-{len(self.fleets)}",
            self.redis_url,
            self.sink.port,
            pool_redis.redis_pool_name(self.namespace, pool),
        )
        self.fleets.append(fleet)
        return fleet.start(count, **overrides)

    def stop(self) -> dict[Path, int | None]:
        """Stops the senders, then every operator still running, as a pod's termination would; returns
        the logs of those that did not exit cleanly, with their exit codes (a killed one is not asked)."""
        for fleet in self.fleets:
            fleet.stop_all()
        running = [operator for operator in self.operators if operator.running()]
        return {operator.log: code for operator in running if (code := operator.stop()) != 0}

    # -- objects ---------------------------------------------------------------------------------------------

    def create_pool(self, name: str = "default", redis_url: str | None = None) -> Json:
        body = {
            "apiVersion": "mailtrain.dev/v1alpha1",
            "kind": "SenderPool",
            "metadata": {"name": name},
            "spec": {
                "queue": {"processes": 0},
                "redis": {"url": redis_url or self.redis_url},
                "smtp": {"host": net.LOOPBACK, "port": self.sink.port, "security": "none"},
            },
        }
        return self.controlplane.api.create(POOLS.format(ns=self.namespace), body)

    def delete_pool(self, name: str = "default") -> None:
        self.controlplane.api.delete(f"{POOLS.format(ns=self.namespace)}/{name}")

    def create_campaign(self, name: str, **spec: Any) -> Json:
        """A campaign with defaults for what the test does not care about; spec keys as in the API."""
        full = {
            "from": {"address": "news@acme.example", "name": "Acme News"},
            "subject": f"[{name}] Hello {{{{ name }}}}",
            "text": "Hello {{ name }}, this is " + name + ".\n",
            **spec,
        }
        body = {"apiVersion": "mailtrain.dev/v1alpha1", "kind": "MailCampaign", "metadata": {"name": name}}
        return self.controlplane.api.create(CAMPAIGNS.format(ns=self.namespace), body | {"spec": full})

    def campaign(self, name: str) -> Json | None:
        return self.controlplane.api.get(f"{CAMPAIGNS.format(ns=self.namespace)}/{name}")

    def status(self, name: str) -> Json:
        found = self.campaign(name)
        return (found or {}).get("status") or {}

    def patch_spec(self, name: str, **spec: Any) -> Json:
        return self.controlplane.api.patch(f"{CAMPAIGNS.format(ns=self.namespace)}/{name}", {"spec": spec})

    def delete_campaign(self, name: str) -> None:
        self.controlplane.api.delete(f"{CAMPAIGNS.format(ns=self.namespace)}/{name}")

    def wait_status(self, name: str, check: Callable[[Json], bool], what: str, timeout: float = 60) -> Json:
        def matching() -> Json | None:
            found = self.status(name)
            return found if found and check(found) else None

        return eventually(matching, timeout=timeout, what=f"{name}: {what}")

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> Json:
        return self.wait_status(name, lambda s: s.get("phase") == phase, f"phase {phase}", timeout)

    def events(self, name: str) -> list[Json]:
        events = self.controlplane.api.list(
            f"/api/v1/namespaces/{self.namespace}/events",
            fieldSelector=f"involvedObject.name={name},involvedObject.kind=MailCampaign",
        )
        # Timestamps have whole seconds, so Events of one second tie; etcd's revision (the resourceVersion
        # of a new object) orders them as they were written.
        return sorted(
            events,
            key=lambda e: (
                e.get("lastTimestamp") or e.get("eventTime") or "",
                int(e["metadata"]["resourceVersion"]),
            ),
        )

    def wait_event(self, name: str, reason: str, timeout: float = 30) -> Json:
        return eventually(
            lambda: next((e for e in self.events(name) if e["reason"] == reason), None),
            timeout=timeout,
            what=f"{name}: an Event {reason} (seen: {[e['reason'] for e in self.events(name)]})",
        )

    # -- the sink --------------------------------------------------------------------------------------------

    def received(self, uid: str) -> Counter[int]:
        """How often each recipient index of the campaign reached the sink (by its Message-ID)."""
        return Counter(index for campaign, index in map(origin, self.sink.messages()) if campaign == uid)

    def wait_received(self, uid: str, count: int, timeout: float = 60) -> Counter[int]:
        def enough() -> Counter[int] | None:
            got = self.received(uid)
            return got if len(got) >= count else None

        return eventually(enough, timeout=timeout, what=f"{count} recipients of {uid} at the sink")

    # -- the apiserver's own counters ------------------------------------------------------------------------

    def apiserver_requests(self, resource: str, subresource: str, verbs: tuple[str, ...]) -> float:
        """Sum of apiserver_request_total for the resource/subresource and verbs, from GET /metrics."""
        pki = self.controlplane.pki
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(f"{self.controlplane.server}/metrics", timeout=30) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels, _, value = line.rpartition(" ")
            wanted = (
                f'resource="{resource}"' in labels
                and f'subresource="{subresource}"' in labels
                and any(f'verb="{verb}"' in labels for verb in verbs)
            )
            if wanted:
                total += float(value)
        return total


def origin(message: ReceivedMessage) -> tuple[str, int]:
    """(campaign id, recipient index) from the Message-ID the sender writes: <campaign.index@domain>."""
    local = str(message.message["Message-ID"]).strip().strip("<>").rpartition("@")[0]
    campaign, _, index = local.rpartition(".")
    return campaign, int(index)


def inline(count: int, prefix: str = "r", start: int = 0) -> list[Json]:
    return [{"email": f"{prefix}{i}@example.org", "name": f"User {i}"} for i in range(start, start + count)]


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def rig(
    crds: ControlPlane, namespace: str, redis_url: str, smtp_sink: RecordingSink, tmp_path: Path
) -> Iterator[CampaignRig]:
    found = CampaignRig(crds, namespace, redis_url, smtp_sink, tmp_path)
    try:
        yield found
    finally:
        unclean = found.stop()
        for operator in found.operators:
            assert "Traceback" not in operator.log_text(), operator.log_text()[-5000:]
        assert not unclean, "\n".join(
            f"{log}: exit {code}\n{net.log_tail(log)}" for log, code in unclean.items()
        )


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    return eventually(check, timeout=timeout, what=what)


def now() -> float:
    return time.monotonic()
