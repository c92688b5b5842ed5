"""How long a pod takes on the local cluster: from its creation to Running, and from Running to Ready.

Times are taken by the client on one monotonic clock: creation when the POST returns, Running and Ready
when a watch shows them (the API's own timestamps have one-second resolution). The pods are created one
after another, each once the previous one is Ready, so each figure is a latency, not a queue.

    make pod-latency    (python -m tests.cluster.pod_latency [--pods 20] [--cluster-dir DIR])

runs it against a cluster from `make cluster-up`, in a namespace of its own that it deletes afterwards.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.helpers import pod, program, ready, redis_container
from tests.harness.cluster import STATE_DIR
from tests.harness.kubeapi import Json, KubeApi

PROBES: dict[str, Json] = {
    # redis, ready once it accepts on its port: the first probe comes at once, often before it listens,
    # and then after periodSeconds.
    "tcp": redis_container(),
    # ready as soon as the agent has run a command inside the container: the agent's own cost.
    "exec": program("app", "signals.py", readinessProbe={"exec": {"command": ["true"]}, "periodSeconds": 1}),
}


@dataclass
class Timeline:
    created: float = 0.0
    running: float | None = None
    ready: float | None = None


@dataclass
class Latencies:
    to_running: list[float] = field(default_factory=list)
    running_to_ready: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def ms(values: list[float]) -> dict[str, float]:
            return {
                "median_ms": round(statistics.median(values) * 1000),
                "max_ms": round(max(values) * 1000),
                "min_ms": round(min(values) * 1000),
            }

        return {
            "pods": len(self.to_running),
            "created_to_running": ms(self.to_running),
            "running_to_ready": ms(self.running_to_ready),
        }


def _watch(
    kube: KubeApi, namespace: str, events: queue.Queue[tuple[float, Json]], stop: threading.Event
) -> None:
    while not stop.is_set():
        for event in kube.watch(f"/api/v1/namespaces/{namespace}/pods", timeout=5):
            events.put((time.monotonic(), event["object"]))
            if stop.is_set():
                return


def measure(kube: KubeApi, namespace: str, pods: int, container: Json, timeout: float = 30) -> Latencies:
    events: queue.Queue[tuple[float, Json]] = queue.Queue()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(kube, namespace, events, stop), daemon=True)
    watcher.start()
    time.sleep(0.5)  # the watch is open before the first pod is created
    result = Latencies()
    try:
        for index in range(pods):
            name = f"latency-{index}"
            timeline = Timeline()
            kube.create(f"/api/v1/namespaces/{namespace}/pods", pod(name, [container]))
            timeline.created = time.monotonic()
            deadline = timeline.created + timeout
            while timeline.ready is None:
                at, obj = events.get(timeout=max(deadline - time.monotonic(), 0.001))
                if obj["metadata"]["name"] != name:
                    continue
                if timeline.running is None and (obj.get("status") or {}).get("phase") == "Running":
                    timeline.running = at
                if timeline.running is not None and ready(obj):
                    timeline.ready = at
            assert timeline.running is not None
            result.to_running.append(timeline.running - timeline.created)
            result.running_to_ready.append(timeline.ready - timeline.running)
    finally:
        stop.set()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--cluster-dir", type=Path, default=STATE_DIR, help="default: make cluster-up's")
    args = parser.parse_args()
    state = json.loads((args.cluster_dir / "state.json").read_text())
    pki = args.cluster_dir / "pki"
    kube = KubeApi(state["server"], pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
    for probe, container in PROBES.items():
        namespace = f"latency-{uuid.uuid4().hex[:8]}"
        kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        while kube.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default") is None:
            time.sleep(0.05)
        try:
            print(
                json.dumps(
                    {"readiness_probe": probe, **measure(kube, namespace, args.pods, container).summary()}
                )
            )
        finally:
            kube.delete(f"/api/v1/namespaces/{namespace}")


if __name__ == "__main__":
    main()
