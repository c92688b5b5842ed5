"""What the MailCampaign tests share: the operator as a real process, a SenderPool on the test's Redis,
real sender processes for that pool, and reading campaigns, Events and the sink.

The pools have `queue.processes: 0`, so their Deployments run no pods: the test starts the pool's
senders itself, as processes it can kill and inspect, under the pool's name in Redis
(`<namespace>/<pool>`, as the pool's sender.toml names it).
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
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
from mailtrain_operator.settings import ENV_PREFIX
from tests.cluster.helpers import eventually
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.senders import SenderFleet, SenderProcess
from tests.harness.smtp_sink import ReceivedMessage, RecordingSink

OPERATOR = Path(sys.executable).parent / "mailtrain-operator"
CAMPAIGNS = "/apis/mailtrain.dev/v1alpha1/namespaces/{ns}/mailcampaigns"
POOLS = "/apis/mailtrain.dev/v1alpha1/namespaces/{ns}/senderpools"


@dataclass
class OperatorProcess:
    """`mailtrain-operator` against the test apiserver, watching one namespace, standalone."""

    controlplane: ControlPlane
    namespace: str
    root: Path
    settings: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.root / "operator.log"

    def start(self) -> OperatorProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        port = net.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env |= {
            "KUBECONFIG": str(self.controlplane.kubeconfig),
            "NO_PROXY": net.LOOPBACK,
            f"{ENV_PREFIX}NAMESPACES": self.namespace,
            f"{ENV_PREFIX}STANDALONE": "true",
            f"{ENV_PREFIX}HEALTH_LISTEN": f"{net.LOOPBACK}:{port}",
            f"{ENV_PREFIX}METRICS_LISTEN": f"{net.LOOPBACK}:{net.free_port()}",
        }
        env |= {ENV_PREFIX + key.upper(): value for key, value in self.settings.items()}
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} ---\n".encode())
            self.process = subprocess.Popen(
                [str(OPERATOR)], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.starts += 1
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def healthy() -> bool:
            try:
                with opener.open(f"http://{net.LOOPBACK}:{port}/healthz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        net.wait_until(healthy, what="operator /healthz", timeout=60, process=self.process, log=self.log)
        return self

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to finish anything."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


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
            self.namespace,
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

    def stop(self) -> None:
        for fleet in self.fleets:
            fleet.stop_all()
        for operator in self.operators:
            operator.stop()

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
        found.stop()
        for operator in found.operators:
            assert "Traceback" not in operator.log_text(), operator.log_text()[-5000:]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    return eventually(check, timeout=timeout, what=what)


def now() -> float:
    return time.monotonic()
