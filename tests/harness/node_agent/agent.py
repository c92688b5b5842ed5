"""The node agent's main loop: register the Node, adopt what a previous agent left running, then keep one
PodWorker per pod bound to the node until told to stop.

Pods come from a list and a watch filtered by `spec.nodeName`, the only way the Node authorizer lets a
node read pods. Every list also ends stray processes: the container cgroups of pods no longer bound here
(deleted while no agent was running) are killed and removed, so nothing is left orphaned.

On SIGTERM or SIGINT every container gets SIGTERM and at most `stop_grace_cap` seconds before SIGKILL,
and the agent exits once no process of its own is left. After SIGKILL (or a crash) the processes keep
running, and the next agent on the same root adopts them.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness.node_agent.cgroups import NodeCgroups
from tests.harness.node_agent.events import EventRecorder
from tests.harness.node_agent.hosts import HostsFiles
from tests.harness.node_agent.images import ImageTable
from tests.harness.node_agent.kube import KUBE_ERRORS, ApiError, KubeClient, credentials_from_kubeconfig
from tests.harness.node_agent.log_server import ContainerLogs, LogServer, ServingIdentity
from tests.harness.node_agent.network import AddressPool
from tests.harness.node_agent.node import NodeRegistration
from tests.harness.node_agent.objects import ObjectCache
from tests.harness.node_agent.pods import NodeServices, PodWorker
from tests.harness.node_agent.services import ServiceDirectory

log = logging.getLogger(__name__)

HOST_IP = "127.0.0.1"
WATCH_SECONDS = 300  # a watch is renewed by a fresh list this often, which also sweeps strays


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    kubeconfig: Path
    root: Path
    images: ImageTable
    version: str
    serving: ServingIdentity | None = None
    stop_grace_cap: float = 10.0
    # kube-proxy's identity, for the Services and EndpointSlices behind pods' Service names (services).
    proxy_kubeconfig: Path | None = None


class NodeAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.root = config.root.resolve()
        self._workers: dict[str, PodWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._adoptable: dict[str, dict[str, int]] = {}
        self._cgroups = NodeCgroups(str(self.root))

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.root.mkdir(parents=True, exist_ok=True)
        lock = _lock_root(self.root)
        kube = KubeClient(credentials_from_kubeconfig(self.config.kubeconfig, self.root / "pki"))
        proxy_kube = None
        if self.config.proxy_kubeconfig is not None:
            proxy_kube = KubeClient(
                credentials_from_kubeconfig(self.config.proxy_kubeconfig, self.root / "pki" / "proxy")
            )
        hosts_stale = asyncio.Event()
        directory = ServiceDirectory(proxy_kube, hosts_stale.set)
        hosts_files = HostsFiles(directory.records)
        addresses = AddressPool(self.root / "network.json")
        events = EventRecorder(kube, self.config.node_name)
        log_server = LogServer(self._container_logs)
        port = await log_server.start(HOST_IP, self.config.serving) if self.config.serving else 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as probe_session:
            try:
                registration = NodeRegistration(
                    kube, self.config.node_name, HOST_IP, addresses.cidr, port, self.config.version
                )
                await registration.register()
                server = kube.credentials.server.removeprefix("https://")
                api_host, _, api_port = server.rpartition(":")
                self._services = NodeServices(
                    kube=kube,
                    images=self.config.images,
                    cache=ObjectCache(kube, ttl=0.9),
                    addresses=addresses,
                    events=events,
                    probe_session=probe_session,
                    host_ip=HOST_IP,
                    api_host=api_host,
                    api_port=int(api_port),
                    allocatable=registration.capacity,
                    pods_dir=self.root / "pods",
                    logs_dir=self.root / "logs",
                    cgroups=self._cgroups,
                    hosts_files=hosts_files,
                    service_names_synced=directory.synced,
                )
                self._adoptable = self._scan_for_adoption()
                log.info("node %s ready; pod addresses %s", self.config.node_name, addresses.cidr)
                background = [
                    asyncio.create_task(registration.heartbeat()),
                    asyncio.create_task(self._watch()),
                    asyncio.create_task(directory.run()),
                    asyncio.create_task(_keep_hosts_files(hosts_files, hosts_stale)),
                ]
                await stop.wait()
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await self._shutdown()
            finally:
                await events.drain()
                await log_server.stop()
                await kube.close()
                if proxy_kube is not None:
                    await proxy_kube.close()
                addresses.close()
                os.close(lock)

    def _scan_for_adoption(self) -> dict[str, dict[str, int]]:
        """pod uid -> container -> pid, for container processes a previous agent left running."""
        found: dict[str, dict[str, int]] = {}
        for pod_uid, name, cgroup in self._cgroups.containers():
            pid = self._cgroups.main_process(cgroup)
            if pid is not None:
                found.setdefault(pod_uid, {})[name] = pid
        return found

    def _container_logs(self, namespace: str, pod: str, container: str) -> ContainerLogs | None:
        worker = next((w for w in self._workers.values() if w.key == f"{namespace}/{pod}"), None)
        return None if worker is None else worker.logs(container)

    async def _watch(self) -> None:
        path = "/api/v1/pods"
        selector = {"fieldSelector": f"spec.nodeName={self.config.node_name}"}
        while True:
            try:
                listing = await self._services.kube.get(path, selector)
                self._sync(listing["items"])
                strays = await asyncio.to_thread(self._cgroups.sweep, set(self._workers))
                if strays:
                    log.warning("killed %d processes of pods no longer bound here: %s", len(strays), strays)
                params = {
                    **selector,
                    "resourceVersion": listing["metadata"]["resourceVersion"],
                    "timeoutSeconds": str(WATCH_SECONDS),
                }
                async for event in self._services.kube.watch(path, params):
                    self._on_event(event)
            except _Expired:
                continue  # the apiserver no longer has our resourceVersion: list again
            except KUBE_ERRORS as exc:
                log.warning("pod watch: %s; listing again in 1s", exc)
                await asyncio.sleep(1)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind, pod = event["type"], event["object"]
        if kind == "ERROR":
            if pod.get("code") == 410:
                raise _Expired
            raise ApiError(int(pod.get("code", 500)), str(pod.get("message", "")))
        if kind == "BOOKMARK":
            return
        if kind == "DELETED":
            worker = self._workers.get(pod["metadata"]["uid"])
            if worker is not None:
                worker.gone()
            return
        self._upsert(pod)

    def _sync(self, pods: list[dict[str, Any]]) -> None:
        bound = {pod["metadata"]["uid"] for pod in pods}
        for uid, worker in list(self._workers.items()):
            if uid not in bound:
                worker.gone()
        for pod in pods:
            self._upsert(pod)

    def _upsert(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        worker = self._workers.get(uid)
        if worker is None:
            worker = PodWorker(self._services, pod, self._adoptable.pop(uid, {}))
            self._workers[uid] = worker
            task = asyncio.create_task(worker.run())
            self._tasks[uid] = task
            task.add_done_callback(lambda t, uid=uid: self._forget(uid, t))  # type: ignore[misc]
        worker.update(pod)

    def _forget(self, uid: str, task: asyncio.Task[None]) -> None:
        self._workers.pop(uid, None)
        self._tasks.pop(uid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("pod worker %s failed", uid, exc_info=task.exception())

    async def _shutdown(self) -> None:
        workers = list(self._workers.values())
        log.info("stopping: the processes of %d pods", len(workers))
        await asyncio.gather(*(w.stop_containers(self.config.stop_grace_cap) for w in workers))
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        leftovers = await asyncio.to_thread(self._cgroups.destroy)
        if leftovers:
            log.warning("killed %d processes that outlived their containers: %s", len(leftovers), leftovers)


async def _keep_hosts_files(files: HostsFiles, stale: asyncio.Event) -> None:
    """Rewrites the pods' hosts files after Service changes; a burst of watch events makes one pass."""
    while True:
        await stale.wait()
        stale.clear()
        try:
            files.refresh()
        except Exception:  # an object we did not expect: the next change tries again, the agent runs on
            log.exception("rewriting the pods' hosts files")


def _lock_root(root: Path) -> int:
    """One agent per node directory: two would both run, and kill, the same pods' processes."""
    fd = os.open(root / "agent.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"another node agent is running on {root}") from None
    return fd


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone)."""
