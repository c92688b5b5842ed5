"""The node agent's hosts files without a cluster: the kubelet's lines, which pods get Service names and
which names, which endpoints count, and the rewrite in place (see tests/harness/node_agent/hosts.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.harness.node_agent.hosts import (
    PodHosts,
    ServiceRecord,
    render,
    resolves_service_names,
    write_in_place,
)
from tests.harness.node_agent.services import port_mismatches, ready_endpoints


def _pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-0", "namespace": "a"}, "spec": {"containers": [], **spec}}


RECORDS = [
    ServiceRecord("a", "db", (("10.244.1.7", "db-0"),)),
    ServiceRecord("b", "cache", (("10.244.1.8", ""), ("10.244.1.9", ""))),
]


def test_a_pod_gets_the_kubelets_lines_its_aliases_and_service_names() -> None:
    aliases = [{"ip": "10.1.2.3", "hostnames": ["x.example", "y.example"]}]
    pod = PodHosts.of(_pod(hostname="web-0", subdomain="web", hostAliases=aliases), "10.244.1.5")
    lines = render(pod, RECORDS).decode().splitlines()
    assert lines[:2] == ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost"]
    assert "10.244.1.5\tweb-0.web.a.svc.cluster.local\tweb-0" in lines
    assert lines.index("10.1.2.3\tx.example") + 1 == lines.index("10.1.2.3\ty.example")
    assert "10.244.1.7\tdb.a.svc.cluster.local db.a.svc db.a db" in lines  # own namespace: the short name
    assert "10.244.1.7\tdb-0.db.a.svc.cluster.local db-0.db.a.svc db-0.db.a db-0.db" in lines
    assert "10.244.1.8\tcache.b.svc.cluster.local cache.b.svc cache.b" in lines  # another: no short name
    assert "10.244.1.9\tcache.b.svc.cluster.local cache.b.svc cache.b" in lines


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ({}, True),
        ({"dnsPolicy": "ClusterFirstWithHostNet"}, True),
        ({"dnsPolicy": "Default"}, False),
        ({"dnsPolicy": "None"}, False),
        ({"hostNetwork": True}, False),  # ClusterFirst on the host network falls back to Default
        ({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}, True),
    ],
)
def test_the_dns_policy_decides_whether_service_names_are_there(spec: dict[str, Any], names: bool) -> None:
    assert resolves_service_names(spec) is names
    text = render(PodHosts.of(_pod(**spec), "10.244.1.5"), RECORDS, "127.0.0.1 localhost machine\n").decode()
    assert ("db.a.svc" in text) is names


def test_a_host_network_pod_starts_from_the_machines_file() -> None:
    text = render(PodHosts.of(_pod(hostNetwork=True), "127.0.0.1"), RECORDS, "127.0.0.1 localhost machine")
    assert text.decode().splitlines()[1] == "127.0.0.1 localhost machine"


def test_only_ready_endpoints_count_and_an_unknown_readiness_is_ready() -> None:
    slices: list[dict[str, Any]] = [
        {
            "endpoints": [
                {"addresses": ["10.244.1.2"], "conditions": {"ready": True}, "hostname": "a-0"},
                {"addresses": ["10.244.1.3"], "conditions": {"ready": False}},
                {"addresses": ["10.244.1.4"], "conditions": {}},
            ]
        },
        {"endpoints": None},
    ]
    assert ready_endpoints(slices) == (("10.244.1.2", "a-0"), ("10.244.1.4", ""))


def test_a_port_that_is_not_its_target_port_is_found() -> None:
    service = {"spec": {"ports": [{"name": "http", "port": 80}, {"name": "redis", "port": 6379}]}}
    slices = [{"ports": [{"name": "http", "port": 8080}, {"name": "redis", "port": 6379}]}]
    assert port_mismatches(service, slices) == ["80 → 8080"]
    unnamed = {"spec": {"ports": [{"port": 6379}]}}
    assert port_mismatches(unnamed, [{"ports": [{"name": "", "port": 6379}]}]) == []


def test_the_file_is_rewritten_in_place_and_never_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "etc-hosts"
    assert write_in_place(path, b"10.244.1.2\tlong-name.example\n")
    inode, size = os.stat(path).st_ino, os.stat(path).st_size
    assert write_in_place(path, b"10.244.1.3\tx\n")
    assert os.stat(path).st_ino == inode  # a bind mount pins the inode: a rename would not be seen
    assert os.stat(path).st_size == size
    assert path.read_text().splitlines() == ["10.244.1.3\tx", "#" + " " * (size - 15)]
    assert not write_in_place(path, b"10.244.1.3\tx\n")  # unchanged: not written
    assert write_in_place(path, b"10.244.1.4\ta-much-longer-name.example\n")
    assert path.read_text() == "10.244.1.4\ta-much-longer-name.example\n"
