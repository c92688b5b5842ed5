"""What the end-to-end system tests share: a namespace with its own operator processes, a SenderPool
whose sender pods run on the local node, MailCampaigns applied with kubectl, the recording sink's
deliveries per recipient, the pods' ends as the apiserver reported them, and a seeded RNG for the
moment a fault strikes.

The seed comes from $FAULTS_SEED, else a fresh one; each test prints it with the command that
replays it. A replay repeats the test's draws (which moment, which fraction of the mail), not the
machine's timing.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.helpers import eventually
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json, KubeApi, KubeApiError
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import OperatorProcess
from tests.harness.smtp_sink import ReceivedMessage, RecordingSink
from tests.operator.campaign_rig import inline
from tests.operator.campaign_rig import origin as rig_origin
from tests.operator.pool_support import SELECTOR, create_pool, pools_path, sender_pool

SEED_ENV = "FAULTS_SEED"
CAMPAIGNS_PATH = "/apis/mailtrain.dev/v1alpha1/namespaces/{ns}/mailcampaigns"


def fault_rng(test: str) -> random.Random:
    """The test's own generator from $FAULTS_SEED (else a fresh seed), printed with its replay."""
    seed = int(os.environ.get(SEED_ENV) or secrets.randbelow(2**31))
    print(f"\nFIGURE seed {seed} (replay: {SEED_ENV}={seed} pytest {test})")
    return random.Random(f"{seed}/{test}")


# -- campaigns and the sink ----------------------------------------------------------------------


def campaigns_yaml(pool: str, names: list[str], recipients: int) -> str:
    docs = [
        {
            "apiVersion": "mailtrain.dev/v1alpha1",
            "kind": "MailCampaign",
            "metadata": {"name": name},
            "spec": {
                "senderPool": pool,
                "from": {"address": "news@acme.example", "name": "Acme News"},
                "subject": f"[{name}] Hello {{{{ name }}}}",
                "text": f"Hello {{{{ name }}}}, this is {name}.\n",
                "recipients": {"inline": inline(recipients, prefix=f"{name}-")},
            },
        }
        for name in names
    ]
    return yaml.safe_dump_all(docs)


def apply_campaigns(
    controlplane: ControlPlane, ns: str, pool: str, names: list[str], recipients: int, tmp: Path
) -> dict[str, str]:
    """kubectl apply the campaigns; their uids (the campaigns' ids in Redis and in Message-IDs) by name."""
    manifest = tmp / f"campaigns-{names[0]}.yaml"
    manifest.write_text(campaigns_yaml(pool, names, recipients))
    controlplane.kubectl("apply", "-n", ns, "-f", str(manifest))
    uids = {}
    for name in names:
        found = controlplane.api.get(f"{CAMPAIGNS_PATH.format(ns=ns)}/{name}")
        assert found is not None
        uids[name] = found["metadata"]["uid"]
    return uids


def campaign_status(kube: KubeApi, ns: str, name: str) -> Json:
    found = kube.get(f"{CAMPAIGNS_PATH.format(ns=ns)}/{name}") or {}
    return dict(found.get("status") or {})


def wait_complete(controlplane: ControlPlane, ns: str, names: list[str], timeout: int = 50) -> None:
    for name in names:
        controlplane.kubectl(
            "wait", "-n", ns, "--for=condition=Complete", f"mailcampaign/{name}", f"--timeout={timeout}s"
        )
        phase = controlplane.kubectl(
            "get", "-n", ns, f"mailcampaign/{name}", "-o", "jsonpath={.status.phase}"
        )
        assert phase.stdout == "Completed", (name, phase.stdout)


def assert_counts_complete(kube: KubeApi, ns: str, names: list[str], recipients: int) -> None:
    """Every campaign's status says every recipient was sent, none pending."""
    for name in names:
        status = campaign_status(kube, ns, name)
        counts = {key: status.get(key) for key in ("total", "sent", "failed", "invalid", "pending")}
        assert counts == {"total": recipients, "sent": recipients, "failed": 0, "invalid": 0, "pending": 0}, (
            name,
            counts,
        )


def campaign_events(kube: KubeApi, ns: str, name: str, reason: str | None = None) -> list[Json]:
    found = kube.list(
        f"/api/v1/namespaces/{ns}/events",
        fieldSelector=f"involvedObject.name={name},involvedObject.kind=MailCampaign",
    )
    return [e for e in found if reason is None or e["reason"] == reason]


def origin(message: ReceivedMessage) -> tuple[str, int]:
    """(campaign id, recipient index) from the Message-ID the sink recorded: <campaign.index@domain>."""
    if not message.message_id:
        return rig_origin(message)  # a sink that did not record it: parse the message
    campaign, _, index = message.message_id.rpartition("@")[0].rpartition(".")
    return campaign, int(index)


def by_campaign(messages: list[ReceivedMessage]) -> dict[str, list[ReceivedMessage]]:
    found: dict[str, list[ReceivedMessage]] = defaultdict(list)
    for message in messages:
        found[origin(message)[0]].append(message)
    for delivered in found.values():
        delivered.sort(key=lambda m: m.received_at)
    return found


def copies(messages: list[ReceivedMessage], uids: dict[str, str]) -> dict[str, Counter[int]]:
    """For each campaign by name, how often each recipient index reached the sink."""
    by_uid = {uid: name for name, uid in uids.items()}
    found: dict[str, Counter[int]] = {name: Counter() for name in uids}
    for message in messages:
        uid, index = origin(message)
        assert uid in by_uid, f"a message of an unknown campaign {uid}"
        found[by_uid[uid]][index] += 1
    return found


def assert_everyone_once(
    messages: list[ReceivedMessage], uids: dict[str, str], recipients: int
) -> dict[str, list[int]]:
    """Every recipient of every campaign reached the sink; returns the recipients that came twice or
    more, by campaign (the caller judges them)."""
    again: dict[str, list[int]] = {}
    for name, counts in copies(messages, uids).items():
        assert sorted(counts) == list(range(recipients)), (
            f"{name}: missing {set(range(recipients)) - set(counts)}"
        )
        again[name] = sorted(index for index, n in counts.items() if n > 1)
    return again


def sent_fraction(sink: RecordingSink, total: int) -> float:
    return len(sink.messages()) / total


# -- processes -----------------------------------------------------------------------------------


def sender_pid(node: LocalNode, pod: Json) -> int:
    return node.container_pids()[(pod["metadata"]["uid"], "sender")]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie has ended, whether or not its parent has reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].startswith("Z")
    except FileNotFoundError:
        return True


def kill_operator(operator: OperatorProcess) -> None:
    """SIGKILL: no status write finished, no goodbye to a peering object."""
    assert operator.process is not None and operator.process.poll() is None
    operator.process.send_signal(signal.SIGKILL)
    operator.process.wait(timeout=30)


@dataclass
class SystemRig:
    """One test's namespace, operators, pool and campaigns; `close` removes them while an operator runs,
    so their finalizers are released, then stops the operators that still run (each must exit 0)."""

    controlplane: ControlPlane
    namespace: str
    redis_url: str
    sink: RecordingSink
    root: Path
    operators: list[OperatorProcess] = field(default_factory=list)

    @property
    def kube(self) -> KubeApi:
        return self.controlplane.api

    def operator(self, **settings: Any) -> OperatorProcess:
        """An operator process watching the namespace: standalone unless `standalone="false"`;
        settings are MAILTRAIN_OPERATOR_* without the prefix."""
        name = f"operator-{len(self.operators)}"  # its POD_ID: replicas sharing one would be one peer
        found = OperatorProcess(
            self.controlplane,
            (self.namespace,),
            self.root / name,
            {key: str(value) for key, value in settings.items()},
            name=name,
        )
        self.operators.append(found)
        return found.start()

    def pool(self, name: str, *, processes: int, rate: float, max_connections: int = 2) -> None:
        smtp = {
            "host": net.LOOPBACK,
            "port": self.sink.port,
            "security": "none",
            "maxConnections": max_connections,
            "throttling": {"messagesPerSecond": rate},
        }
        body = sender_pool(
            name, self.sink.port, queue={"processes": processes}, redis={"url": self.redis_url}, smtp=smtp
        )
        create_pool(self.kube, self.namespace, body)

    def apply(self, pool: str, names: list[str], recipients: int) -> dict[str, str]:
        return apply_campaigns(self.controlplane, self.namespace, pool, names, recipients, self.root)

    def close(self) -> None:
        live = [op for op in self.operators if op.process is not None and op.process.poll() is None]
        try:
            if live:
                for kind_path in (CAMPAIGNS_PATH.format(ns=self.namespace), pools_path(self.namespace)):
                    self._delete_all(kind_path, live[-1])
        finally:
            codes = {op.root.name: op.stop() for op in live}
        assert set(codes.values()) <= {0}, f"operators exited with {codes}"

    def _delete_all(self, collection: str, operator: OperatorProcess) -> None:
        for found in self.kube.list(collection):
            try:
                self.kube.delete(f"{collection}/{found['metadata']['name']}")
            except KubeApiError as exc:
                if exc.status != 404:
                    raise
        deadline = time.monotonic() + 60
        while self.kube.list(collection):
            assert time.monotonic() < deadline, f"{collection} not emptied:\n{net.log_tail(operator.log)}"
            time.sleep(0.1)


def open_system(
    controlplane: ControlPlane, namespace: str, redis_url: str, sink: RecordingSink, root: Path
) -> Iterator[SystemRig]:
    """The body of a test module's `system` fixture: the namespace enforces Pod Security "restricted",
    as the module namespaces of the other pool tests do."""
    controlplane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    rig = SystemRig(controlplane, namespace, redis_url, sink, root)
    try:
        yield rig
    finally:
        rig.close()


# -- pods ----------------------------------------------------------------------------------------


@dataclass
class PodEnd:
    """What the watch saw of one pod: when its deletion began and how its sender container ended."""

    deleting_at: float | None = None  # time.time() when the watch first showed a deletionTimestamp
    ended_at: float | None = None  # time.time() when the watch first showed the sender terminated
    terminated: Json | None = None  # the sender container's state.terminated
    grace: int | None = None  # the pod's terminationGracePeriodSeconds


@dataclass
class PodWatcher:
    """Watches the pool's pods in a thread, from now on, and keeps how each one ended."""

    api: KubeApi
    namespace: str
    pool: str
    pods: dict[str, PodEnd] = field(default_factory=lambda: defaultdict(PodEnd))
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> PodWatcher:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        selector = SELECTOR.format(pool=self.pool)
        try:
            listed = self.api.request("GET", path, query={"labelSelector": selector})
            version = listed["metadata"]["resourceVersion"]
            for pod in listed["items"]:
                self._saw(pod)
            while not self._stop.is_set():
                for event in self.api.watch(path, timeout=2, labelSelector=selector, resourceVersion=version):
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._saw(event["object"])
        except BaseException as error:  # reported by stop()
            self.errors.append(error)

    def _saw(self, pod: Json) -> None:
        end = self.pods[pod["metadata"]["name"]]
        end.grace = pod["spec"].get("terminationGracePeriodSeconds")
        if end.deleting_at is None and pod["metadata"].get("deletionTimestamp"):
            end.deleting_at = time.time()
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if status["name"] == "sender" and terminated and end.terminated is None:
                end.terminated, end.ended_at = terminated, time.time()

    def stop(self) -> dict[str, PodEnd]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=15)
        assert not self.errors, self.errors
        return dict(self.pods)


def wait_sent(sink: RecordingSink, count: int, *, timeout: float = 60) -> None:
    eventually(lambda: len(sink.messages()) >= count, timeout=timeout, what=f"{count} messages at the sink")
