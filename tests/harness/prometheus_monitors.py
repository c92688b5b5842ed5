"""ServiceMonitors and PodMonitors as Prometheus scrape configs, the way the Prometheus Operator
generates them, so a plain Prometheus scrapes exactly the targets, with exactly the labels, that a
cluster's monitoring stack would from the chart's monitors.

A transcription of the subset of the Prometheus Operator v0.85.0 (`pkg/prometheus/promcfg.go`,
`generatePodMonitorConfig` and `generateServiceMonitorConfig`, role `endpoints`, relabelling
selector mechanism) that the chart uses: selector matchLabels and matchExpressions, namespaceSelector
(`any`, `matchNames`, or the monitor's own namespace), endpoints by port name with path, interval and
scrapeTimeout, targetLabels and podTargetLabels. Anything else in a monitor is refused, rather than
quietly scraped differently. `honor_labels` is false, as there: a label of a series that a target
label also sets is kept as `exported_<label>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Json = dict[str, Any]
# (role, namespaces or None for all) -> the discovery part of a scrape config.
Discovery = Callable[[str, list[str] | None], Json]

_ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout"}
_SPEC_FIELDS = {"selector", "namespaceSelector", "endpoints", "podMetricsEndpoints"}
_SPEC_FIELDS |= {"targetLabels", "podTargetLabels"}


def sanitize(name: str) -> str:
    """A Kubernetes label name as a Prometheus label name (promcfg.go's sanitizeLabelName)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def kubernetes_sd(options: Json) -> Discovery:
    """kubernetes_sd_configs, with e.g. {"kubeconfig_file": ...} in each entry."""

    def discovery(role: str, namespaces: list[str] | None) -> Json:
        entry = {"role": role, **options}
        if namespaces is not None:
            entry["namespaces"] = {"names": namespaces}
        return {"kubernetes_sd_configs": [entry]}

    return discovery


def scrape_configs(monitors: list[Json], sd: Discovery) -> list[Json]:
    """One scrape config per endpoint of each monitor, finding targets through `sd`."""
    configs = []
    for monitor in monitors:
        spec = monitor["spec"]
        unknown = set(spec) - _SPEC_FIELDS
        assert not unknown, f"{monitor['metadata']['name']}: not transcribed: {sorted(unknown)}"
        if monitor["kind"] == "ServiceMonitor":
            endpoints, build = spec["endpoints"], _service_monitor
        elif monitor["kind"] == "PodMonitor":
            endpoints, build = spec["podMetricsEndpoints"], _pod_monitor
        else:
            raise ValueError(f"not a monitor: {monitor['kind']}")
        for index, endpoint in enumerate(endpoints):
            unknown = set(endpoint) - _ENDPOINT_FIELDS
            assert not unknown, f"{monitor['metadata']['name']}: not transcribed: {sorted(unknown)}"
            configs.append(build(monitor, endpoint, index, sd))
    return configs


def _common(monitor: Json, endpoint: Json, job: str, role: str, sd: Discovery) -> Json:
    meta, spec = monitor["metadata"], monitor["spec"]
    namespaces = spec.get("namespaceSelector") or {}
    names = None if namespaces.get("any") else namespaces.get("matchNames") or [meta["namespace"]]
    config: Json = {
        "job_name": f"{job}/{meta['namespace']}/{meta['name']}/0",
        "honor_labels": False,
        "honor_timestamps": True,
        **sd(role, names),
    }
    for key, name in (("interval", "scrape_interval"), ("scrapeTimeout", "scrape_timeout")):
        if key in endpoint:
            config[name] = endpoint[key]
    if "path" in endpoint:
        config["metrics_path"] = endpoint["path"]
    return config


def _selector(selector: Json, kind: str) -> list[Json]:
    """keep/drop rules for a label selector on the pod's or the service's labels."""
    rules = []

    def sources(key: str) -> list[str]:
        return [
            f"__meta_kubernetes_{kind}_label_{sanitize(key)}",
            f"__meta_kubernetes_{kind}_labelpresent_{sanitize(key)}",
        ]

    for key in sorted(selector.get("matchLabels") or {}):
        value = selector["matchLabels"][key]
        rules.append({"action": "keep", "source_labels": sources(key), "regex": f"({value});true"})
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = "|".join(expression.get("values") or [])
        present = [f"__meta_kubernetes_{kind}_labelpresent_{sanitize(key)}"]
        rule = {
            "In": {"action": "keep", "source_labels": sources(key), "regex": f"({values});true"},
            "NotIn": {"action": "drop", "source_labels": sources(key), "regex": f"({values});true"},
            "Exists": {"action": "keep", "source_labels": present, "regex": "true"},
            "DoesNotExist": {"action": "drop", "source_labels": present, "regex": "true"},
        }[operator]
        rules.append(rule)
    return rules


def _copied(labels: list[str], kind: str) -> list[Json]:
    return [
        {
            "source_labels": [f"__meta_kubernetes_{kind}_label_{sanitize(label)}"],
            "target_label": sanitize(label),
            "regex": "(.+)",
            "replacement": "${1}",
        }
        for label in labels
    ]


_JOB_AS_META = {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}
_RUNNING_ONLY = {
    "action": "drop",
    "source_labels": ["__meta_kubernetes_pod_phase"],
    "regex": "(Failed|Succeeded)",
}


def _pod_monitor(monitor: Json, endpoint: Json, index: int, sd: Discovery) -> Json:
    meta, spec = monitor["metadata"], monitor["spec"]
    config = _common(monitor, endpoint, "podMonitor", "pod", sd)
    config["job_name"] = f"podMonitor/{meta['namespace']}/{meta['name']}/{index}"
    relabel = [_JOB_AS_META, _RUNNING_ONLY, *_selector(spec["selector"], "pod")]
    port = endpoint["port"]
    relabel.append(
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port}
    )
    relabel += [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        *_copied(spec.get("podTargetLabels") or [], "pod"),
        {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
        {"target_label": "endpoint", "replacement": port},
    ]
    config["relabel_configs"] = relabel
    return config


def _service_monitor(monitor: Json, endpoint: Json, index: int, sd: Discovery) -> Json:
    meta, spec = monitor["metadata"], monitor["spec"]
    config = _common(monitor, endpoint, "serviceMonitor", "endpoints", sd)
    config["job_name"] = f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}"
    port = endpoint["port"]
    target = [
        "__meta_kubernetes_endpoint_address_target_kind",
        "__meta_kubernetes_endpoint_address_target_name",
    ]
    relabel = [_JOB_AS_META, *_selector(spec["selector"], "service")]
    relabel += [
        {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": port},
        {
            "source_labels": target,
            "separator": ";",
            "regex": "Node;(.*)",
            "replacement": "${1}",
            "target_label": "node",
        },
        {
            "source_labels": target,
            "separator": ";",
            "regex": "Pod;(.*)",
            "replacement": "${1}",
            "target_label": "pod",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        _RUNNING_ONLY,
        *_copied(spec.get("targetLabels") or [], "service"),
        *_copied(spec.get("podTargetLabels") or [], "pod"),
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
        {"target_label": "endpoint", "replacement": port},
    ]
    config["relabel_configs"] = relabel
    return config
