"""A real Prometheus server (upstream, built by hack/prometheus.sh) on a free loopback port, with
storage of its own, for tests and `make demo`.

It finds its targets through `kubernetes_sd_configs` against the local apiserver (the caller gives the
scrape configs: `tests.harness.prometheus_monitors` makes them from ServiceMonitors and PodMonitors, as
the Prometheus Operator does; `discovery_kubeconfig` gives it the identity and the read-only RBAC a
cluster's Prometheus has), scrapes them at their pod IPs, and evaluates a rules file, e.g. the
`spec.groups` of the chart's PrometheusRule. Intervals are short (1 s), so a test sees an alert go
pending, fire and resolve within seconds of what its `for` says.

The HTTP API is read with `query`, `alerts`, `targets` and `rules`; `wait_for` polls any of them with a
deadline and says what it saw last when the deadline passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from tests.harness import binaries, net
from tests.harness.kubeapi import KubeApiError

if TYPE_CHECKING:
    from tests.harness.controlplane import ControlPlane

Json = dict[str, Any]
T = TypeVar("T")

STARTUP_TIMEOUT = 60.0
DISCOVERY_USER = "prometheus"
# What Prometheus's Kubernetes discovery reads for roles pod and endpoints (the Prometheus Operator's
# example ClusterRole, less what the tests never scrape: nodes, ingresses, /metrics of the apiserver).
DISCOVERY_RULES = [
    {"apiGroups": [""], "resources": ["pods", "services", "endpoints"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
]


class PrometheusError(RuntimeError):
    """The API answered with an error (a bad query), or not at all."""


@dataclass
class Prometheus:
    root: Path
    scrape_configs: list[Json]
    rule_groups: list[Json] = field(default_factory=list)
    port: int = field(default_factory=net.free_port)
    interval: str = "1s"  # scrape and rule evaluation, unless a scrape config says otherwise
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{net.LOOPBACK}:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "prometheus.log"

    @property
    def config_file(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def rules_file(self) -> Path:
        return self.root / "rules.yml"

    def write_config(self) -> None:
        self.rules_file.write_text(yaml.safe_dump({"groups": self.rule_groups}, sort_keys=False))
        config = {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
            },
            "rule_files": [str(self.rules_file)],
            "scrape_configs": self.scrape_configs,
        }
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> Prometheus:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        check = subprocess.run(
            [str(binaries.prometheus_binary("promtool")), "check", "config", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check.returncode != 0:
            raise PrometheusError(f"promtool refuses {self.config_file}:\n{check.stdout}{check.stderr}")
        args = [
            str(binaries.prometheus_binary("prometheus")),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address={net.LOOPBACK}:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload after write_config()
            "--log.level=info",
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=_without_proxies(),
                start_new_session=True,
            )
        net.wait_until(
            self._ready, what="prometheus", timeout=STARTUP_TIMEOUT, process=self.process, log=self.log
        )
        return self

    def _ready(self) -> bool:
        try:
            with _opener().open(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def reload(self) -> None:
        """Writes the config and rules again and makes the running server read them."""
        self.write_config()
        with _opener().open(f"{self.url}/-/reload", data=b"", timeout=30) as response:  # a POST
            assert response.status == 200

    def stop(self) -> None:
        if self.process is not None:
            net.stop_process(self.process, grace=20)
            self.process = None

    # -- the HTTP API ------------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """The `data` of GET /api/v1/<path>."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with _opener().open(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"/api/v1/{path} {params}: {exc.code} {exc.read()[:500]!r}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PrometheusError(f"/api/v1/{path}: {exc}\n{net.log_tail(self.log)}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"/api/v1/{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[Json]:
        """An instant query's vector: [{"metric": {...}, "value": [time, "value"]}, ...]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def alerts(self, name: str | None = None, state: str | None = None) -> list[Json]:
        """The active alerts (pending or firing; a resolved one is not listed), optionally of one name
        and state."""
        found = self.api("alerts")["alerts"]
        return [
            a
            for a in found
            if (name is None or a["labels"].get("alertname") == name)
            and (state is None or a["state"] == state)
        ]

    def targets(self) -> list[Json]:
        """The active targets: labels (after relabelling), scrapeUrl, health ("up"), lastError."""
        return list(self.api("targets", state="active")["activeTargets"])

    def rules(self) -> list[Json]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def wait_for(
        self, check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2
    ) -> T:
        """Polls `check` until it returns something truthy; fails naming `what` and the last result."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited ({self.process.returncode}):\n{net.log_tail(self.log)}"
                )
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"not within {timeout:g}s: {what} (last seen: {last!r})")


def discovery_kubeconfig(plane: ControlPlane) -> Path:
    """A kubeconfig for Prometheus's Kubernetes discovery: its own identity, bound to a ClusterRole that
    only reads pods, Services and endpoints, as a cluster's Prometheus is."""
    name = f"{DISCOVERY_USER}-discovery"
    role = {"metadata": {"name": name}, "rules": DISCOVERY_RULES}
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DISCOVERY_USER}],
    }
    for kind, body in (("clusterroles", role), ("clusterrolebindings", binding)):
        try:
            plane.api.create(f"/apis/rbac.authorization.k8s.io/v1/{kind}", body)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            # Made for an earlier test on this control plane: made what this one says again.
            plane.api.patch(f"/apis/rbac.authorization.k8s.io/v1/{kind}/{name}", body)
    return plane.kubeconfig_for(DISCOVERY_USER)


def _without_proxies() -> dict[str, str]:
    """Everything Prometheus talks to is on this machine: its Kubernetes client would otherwise take
    HTTPS_PROXY from the environment for the apiserver."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "*"
    return env


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))
