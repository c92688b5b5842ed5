"""make bench-operator: the operator as a real process on the local cluster, each figure with a baseline.

The local cluster (etcd, kube-apiserver, controller-manager, scheduler, the node agent), a redis-server,
the recording SMTP sink, `mailtrain-operator` watching one namespace, and two SenderPools: `senders`
(two sender pods, Ready before anything is measured) and `bulk` (no pods, so that a million recipients
are published and nothing sends them). Prints one JSON line per figure:

  url-publish        a MailCampaign whose recipients.url lists 1,000,000 csv rows (bench_recipients'
                     list: 998,000 recipients, 1,000 bad addresses, 1,000 duplicates), `kubectl apply`
                     until its status has the total (published in Redis): rows per second, CPU per
                     row, and the operator's peak RSS (VmHWM, reset through clear_refs before each
                     apply) above its RSS before the first. Baseline: the same list through
                     open_source into Publisher.publish in a fresh process (bench_recipients'
                     `publish` run), on a Redis of its own, alternating with the operator's rounds.
  many-campaigns     200 campaigns of 3 inline recipients in one `kubectl apply`, until all are
                     Completed and their Completed Events are posted: the operator's CPU seconds
                     (utime + stime from /proc) and the apiserver's writes (apiserver_request_total,
                     POST/PUT/PATCH/DELETE/APPLY) per campaign. Baselines over the same wall time: the
                     operator idle with the 200 Completed campaigns, and idle with none.
  first-message      `kubectl apply` of a one-recipient campaign until its message is at the sink,
                     one after another: median, min and max of 20. Baseline: the `kubectl apply` alone.

`--scale` multiplies the rows, the campaigns and the samples (at least 5) for a quick look.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bench import bench_recipients
from bench.bench_sender import cpu_seconds
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import OperatorProcess
from tests.harness.redis_server import RedisServer
from tests.harness.smtp_sink import RecordingSink
from tests.operator import apiserver_writes
from tests.operator.pool_support import pool_when, ready_pool, sender_pool

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
GROUP_PATH = "/apis/mailtrain.dev/v1alpha1"
OPERATOR_RESOURCES = frozenset({"mailcampaigns", "events", "senderpools"})
CLIENT_WRITES = frozenset({("mailcampaigns", "", "POST"), ("mailcampaigns", "", "DELETE")})  # kubectl's
T = TypeVar("T")


def emit(figure: str, **values: Any) -> None:
    print(json.dumps({"figure": figure, **values}), flush=True)


def until(check: Callable[[], T | None], what: str, timeout: float, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout:g} s: {what}")


def median(values: Iterable[float]) -> float:
    return round(statistics.median(values), 2)


def proc_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def reset_peak_rss(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")  # Linux: VmHWM := VmRSS


def inline(count: int, prefix: str) -> list[Json]:
    return [{"email": f"{prefix}{i}@example.org", "name": f"User {i}"} for i in range(count)]


def campaign(name: str, pool: str, recipients: Json) -> Json:
    return {
        "apiVersion": "mailtrain.dev/v1alpha1",
        "kind": "MailCampaign",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "senderPool": pool,
            "from": {"address": "news@acme.example"},
            "subject": "Hello {{ name }}",
            "text": "Hello {{ name }}, your order {{ order | default('none') }}.\n",
            "recipients": recipients,
        },
    }


class Rig:
    """The cluster, Redis, the sink, the operator and its two pools; `stop` ends them all."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.controlplane = ControlPlane(work / "controlplane")
        self.node = LocalNode(self.controlplane, work / "node")
        self.redis = RedisServer(work / "redis")
        self.sink = RecordingSink(work / "sink", record_raw=False)
        self.operator = OperatorProcess(self.controlplane, (NAMESPACE,), work / "operator")

    def start(self) -> Rig:
        plane = self.controlplane.start()
        self.node.start()
        self.redis.start()
        self.sink.start()
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        for crd in ("mailcampaigns.mailtrain.dev", "senderpools.mailtrain.dev"):
            plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        plane.kubectl("create", "namespace", NAMESPACE)
        until(
            lambda: plane.api.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"),
            "the namespace's default ServiceAccount",
            timeout=60,
        )
        self.operator.start()
        smtp = {"host": net.LOOPBACK, "port": self.sink.port, "security": "none", "maxConnections": 4}
        redis = {"url": self.redis.url}
        self.apply(
            sender_pool("senders", self.sink.port, queue={"processes": 2}, redis=redis, smtp=smtp),
            sender_pool("bulk", self.sink.port, queue={"processes": 0}, redis=redis, smtp=smtp),
        )
        ready_pool(plane.api, NAMESPACE, "senders", 2)
        pool_when(plane.api, NAMESPACE, "bulk", _observed, timeout=60, what="bulk: observed")
        return self

    def stop(self) -> None:
        self.operator.stop()
        for stop in (self.node.stop, self.sink.stop, self.redis.stop, self.controlplane.stop):
            try:
                stop()
            except Exception as exc:  # the rest still has to stop
                print(f"stopping: {type(exc).__name__}: {exc}", file=sys.stderr)

    @property
    def pid(self) -> int:
        assert self.operator.process is not None
        return self.operator.process.pid

    def apply(self, *objects: Json) -> float:
        """`kubectl apply` of the objects in one manifest; the seconds it took."""
        manifest = self.work / f"manifest-{time.monotonic_ns()}.yaml"
        manifest.write_text(yaml.safe_dump_all(objects))
        started = time.monotonic()
        self.controlplane.kubectl("apply", "-n", NAMESPACE, "-f", str(manifest))
        return time.monotonic() - started

    def campaigns(self) -> list[Json]:
        return self.controlplane.api.list(f"{GROUP_PATH}/namespaces/{NAMESPACE}/mailcampaigns")

    def campaign_status(self, name: str) -> Json:
        found = self.controlplane.api.get(f"{GROUP_PATH}/namespaces/{NAMESPACE}/mailcampaigns/{name}")
        return (found or {}).get("status") or {}

    def delete_campaigns(self, timeout: float = 300) -> None:
        self.controlplane.kubectl("delete", "-n", NAMESPACE, "mailcampaigns", "--all", "--wait=false")
        until(lambda: not self.campaigns(), "every campaign deleted", timeout=timeout, interval=0.5)

    def operator_metric(self, name: str) -> float:
        """A sample without labels from the operator's /metrics (whose address its log names)."""
        found = re.search(r"serving /metrics on (\S+)", self.operator.log_text())
        assert found is not None, "the operator did not say where it serves /metrics"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{found.group(1)}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    def writes(self) -> Counter[apiserver_writes.Key]:
        return apiserver_writes.read(self.controlplane)


def _observed(pool: Json) -> bool:
    return bool((pool.get("status") or {}).get("observedGeneration") == pool["metadata"]["generation"])


# -- 1: a million rows from a URL ------------------------------------------------------------------


def url_publish(rig: Rig, rows: int, rounds: int) -> None:
    expected = sum(1 for i in range(rows) if i % 1000 != 999)  # duplicates are not in the total
    port = net.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_recipients", "serve", "--port", str(port), "--rows", str(rows)],
        cwd=ROOT,
    )
    scratch = RedisServer(rig.work / "baseline-redis").start()
    try:
        net.wait_until(lambda: net.port_accepts(port), what="list server", timeout=30, process=server)
        url = f"http://{net.LOOPBACK}:{port}/list.csv"
        runs: list[dict[str, float]] = []
        baselines: list[dict[str, Any]] = []
        for round_ in range(rounds):  # operator and baseline alternate: drift hits both alike
            runs.append(_operator_publish(rig, f"url-{round_}", url, expected, rows))
            baselines.append(bench_recipients.run("publish", url, scratch.url))
        base_rate = statistics.median(rows / b["seconds"] for b in baselines)
        base_seconds = statistics.median(b["seconds"] for b in baselines)
        base_rss = statistics.median(b["peak_rss_mib"] for b in baselines)
        base_cpu = statistics.median(b["cpu_seconds"] for b in baselines)
        cpu = statistics.median(r["cpu_seconds"] for r in runs)
        rate = statistics.median(r["rows_per_second"] for r in runs)
        # The first round's peak is over a fresh operator; later rounds reuse the memory that the
        # allocator kept from it, so the highest peak over the RSS before the first is the figure.
        peak = max(r["peak_rss_mib"] for r in runs)
        added = peak - runs[0]["rss_before_mib"]
        emit(
            "url-publish",
            rows=rows,
            total=expected,
            rounds=rounds,
            rows_per_second=round(rate),
            seconds=median(r["seconds"] for r in runs),
            operator_publish_seconds=median(r["publish_seconds"] for r in runs),
            operator_cpu_seconds=round(cpu, 2),
            operator_cpu_us_per_row=round(1e6 * cpu / rows, 1),
            operator_rss_before_mib=runs[0]["rss_before_mib"],
            operator_peak_rss_mib=peak,
            peak_rss_added_mib=round(added, 2),
            baseline_rows_per_second=round(base_rate),
            baseline_seconds=round(base_seconds, 2),
            baseline_peak_rss_added_mib=round(base_rss, 2),
            baseline_cpu_seconds=round(base_cpu, 2),
            baseline_cpu_us_per_row=round(1e6 * base_cpu / rows, 1),
            rate_ratio=round(rate / base_rate, 3),
            cpu_ratio=round(cpu / base_cpu, 3),
            rss_added_ratio=round(added / base_rss, 3) if base_rss > 0 else None,
        )
    finally:
        server.terminate()
        server.wait()
        scratch.stop()


def _operator_publish(rig: Rig, name: str, url: str, expected: int, rows: int) -> dict[str, float]:
    publishing_before = rig.operator_metric("mailtrain_operator_publish_seconds_sum")
    reset_peak_rss(rig.pid)
    rss_before = proc_kib(rig.pid, "VmRSS")
    cpu_before = cpu_seconds(rig.pid)
    started = time.monotonic()
    rig.apply(campaign(name, "bulk", {"url": {"href": url}}))
    status = until(lambda: _published(rig, name), f"{name}: published", timeout=1800)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(rig.pid) - cpu_before
    peak = proc_kib(rig.pid, "VmHWM")
    publishing = rig.operator_metric("mailtrain_operator_publish_seconds_sum") - publishing_before
    assert status["total"] == expected, (status, expected)
    rig.delete_campaigns()  # the finalizer removes its keys from Redis
    return {
        "seconds": round(seconds, 2),
        "rows_per_second": rows / seconds,
        "publish_seconds": round(publishing, 2),
        "cpu_seconds": round(cpu, 2),
        "rss_before_mib": round(rss_before / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
    }


def _published(rig: Rig, name: str) -> Json | None:
    """The status once the operator has written the total, which it does right after the publish."""
    status = rig.campaign_status(name)
    return status if status.get("total") is not None else None


# -- 2: many campaigns at once ---------------------------------------------------------------------


def many_campaigns(rig: Rig, count: int) -> None:
    names = [f"many-{i:03d}" for i in range(count)]
    before, cpu_before = rig.writes(), cpu_seconds(rig.pid)
    started = time.monotonic()
    apply_seconds = rig.apply(*(campaign(n, "senders", {"inline": inline(3, prefix=f"{n}-")}) for n in names))

    def completed() -> bool:
        phases = Counter((c.get("status") or {}).get("phase") for c in rig.campaigns())
        return phases == Counter({"Completed": count})

    until(completed, f"{count} campaigns Completed", timeout=600, interval=0.5)
    completed_after = time.monotonic() - started
    until(lambda: _completed_events(rig) >= count, f"{count} Completed Events", timeout=120, interval=0.5)
    wall = time.monotonic() - started
    cpu = cpu_seconds(rig.pid) - cpu_before
    writes = rig.writes()
    ours = _operator_writes(before, writes)
    every = sum(apiserver_writes.between(before, writes, frozenset({k[0] for k in writes})).values())

    idle_full = _idle(rig, wall)  # the operator with the Completed campaigns, doing nothing
    deleted_before = rig.writes()
    rig.delete_campaigns()
    deleting = _operator_writes(deleted_before, rig.writes())
    idle_empty = _idle(rig, wall)
    emit(
        "many-campaigns",
        campaigns=count,
        kubectl_apply_seconds=round(apply_seconds, 2),
        all_completed_seconds=round(completed_after, 2),
        wall_seconds=round(wall, 2),
        operator_cpu_seconds=round(cpu, 2),
        operator_cpu_ms_per_campaign=round(1000 * cpu / count, 1),
        operator_writes_per_campaign=round(sum(ours.values()) / count, 3),
        operator_writes=apiserver_writes.describe(ours),
        all_writes_per_campaign=round((every - idle_empty["all_writes"]) / count, 3),
        delete_writes_per_campaign=round(sum(deleting.values()) / count, 3),
        baseline_idle_cpu_seconds=idle_empty["cpu_seconds"],
        baseline_idle_operator_writes=idle_empty["operator_writes"],
        baseline_idle_all_writes=idle_empty["all_writes"],
        idle_with_completed_cpu_seconds=idle_full["cpu_seconds"],
        idle_with_completed_operator_writes=idle_full["operator_writes"],
        cpu_ratio_to_idle=round(cpu / max(idle_empty["cpu_seconds"], 0.01), 1),
        completed_idle_cpu_ratio_to_idle=round(
            idle_full["cpu_seconds"] / max(idle_empty["cpu_seconds"], 0.01), 2
        ),
    )


def _completed_events(rig: Rig) -> int:
    events = rig.controlplane.api.list(
        f"/api/v1/namespaces/{NAMESPACE}/events",
        fieldSelector="involvedObject.kind=MailCampaign,reason=Completed",
    )
    return len({e["involvedObject"]["name"] for e in events})


def _operator_writes(
    before: Counter[apiserver_writes.Key], after: Counter[apiserver_writes.Key]
) -> Counter[apiserver_writes.Key]:
    found = apiserver_writes.between(before, after, OPERATOR_RESOURCES)
    return Counter({key: n for key, n in found.items() if key[:3] not in CLIENT_WRITES})


def _idle(rig: Rig, seconds: float) -> dict[str, float]:
    """The operator's CPU and the apiserver's writes over `seconds` in which nobody asks anything."""
    before, cpu_before = rig.writes(), cpu_seconds(rig.pid)
    time.sleep(seconds)  # a window of wall time to measure, not a wait for an event
    after = rig.writes()
    every = apiserver_writes.between(before, after, frozenset({k[0] for k in after}))
    return {
        "cpu_seconds": round(cpu_seconds(rig.pid) - cpu_before, 2),
        "operator_writes": sum(_operator_writes(before, after).values()),
        "all_writes": sum(every.values()),
    }


# -- 3: kubectl apply to the first message ---------------------------------------------------------


def first_message(rig: Rig, samples: int) -> None:
    latencies: list[float] = []
    applies: list[float] = []
    for i in range(samples):
        name = f"first-{i:02d}"
        started = time.time()
        applies.append(rig.apply(campaign(name, "senders", {"inline": inline(1, prefix=f"{name}-")})))
        found = rig.controlplane.api.get(f"{GROUP_PATH}/namespaces/{NAMESPACE}/mailcampaigns/{name}")
        assert found is not None, name
        prefix = found["metadata"]["uid"] + "."  # Message-IDs are <campaign uid.index@domain>
        arrived = until(
            partial(_first_from, rig.sink, prefix), f"{name}'s message", timeout=60, interval=0.02
        )
        latencies.append(arrived - started)
    rig.delete_campaigns()
    emit(
        "first-message",
        samples=samples,
        median_seconds=round(statistics.median(latencies), 3),
        min_seconds=round(min(latencies), 3),
        max_seconds=round(max(latencies), 3),
        baseline_kubectl_apply_median_seconds=round(statistics.median(applies), 3),
        baseline_kubectl_apply_min_seconds=round(min(applies), 3),
        baseline_kubectl_apply_max_seconds=round(max(applies), 3),
    )


def _first_from(sink: RecordingSink, prefix: str) -> float | None:
    """When the sink received the first message whose Message-ID starts with `prefix` (its clock)."""
    return next((m.received_at for m in sink.messages() if m.message_id.startswith(prefix)), None)


# -- the run ---------------------------------------------------------------------------------------


def main(scale: float, rounds: int, figures: set[str]) -> None:
    rows, count, samples = round(1_000_000 * scale), max(1, round(200 * scale)), max(5, round(20 * scale))
    emit("machine", cpus=os.cpu_count(), python=platform.python_version(), platform=platform.platform(),
         load_average=os.getloadavg(), rows=rows, campaigns=count, samples=samples)  # fmt: skip
    rig = Rig(Path(tempfile.mkdtemp(prefix="bench-operator-")))
    try:
        rig.start()
        emit("operator-idle", rss_mib=round(proc_kib(rig.pid, "VmRSS") / 1024, 1))
        if "url-publish" in figures:  # first, so that its peak RSS is over a fresh operator's
            url_publish(rig, rows, rounds)
        if "first-message" in figures:
            first_message(rig, samples)
        if "many-campaigns" in figures:
            many_campaigns(rig, count)
        assert "Traceback" not in rig.operator.log_text(), net.log_tail(rig.operator.log)
    finally:
        rig.stop()
    emit("done", work=str(rig.work), load_average=os.getloadavg())


FIGURES = ("url-publish", "first-message", "many-campaigns")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply rows, campaigns, samples (0.1: quick)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="url-publish: alternating repeats, medians")
    parser.add_argument(
        "--only", choices=FIGURES, action="append", help="measure only this figure (repeatable)"
    )
    args = parser.parse_args()
    main(args.scale, args.rounds, set(args.only or FIGURES))
