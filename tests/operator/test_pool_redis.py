"""A pool's Redis, end to end: a change of it rolls the pods (and only such a change does), a URL from a
Secret reaches the pods as MAILTRAIN_REDIS_URL, and `redis.enabled: false` runs one sender beside a
private Redis that the operator reads through the pool's EndpointSlices.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import redis
from redis.asyncio import Redis as AsyncRedis

from mailtrain_operator.pool_redis import redis_pool_name
from mailtrain_sender.layout import PoolKeys
from mailtrain_sender.publisher import Publisher
from tests.cluster.helpers import eventually
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import OperatorProcess
from tests.harness.redis_server import RedisServer
from tests.operator.pool_support import (
    config_map_path,
    create_pool,
    deployment_path,
    existing,
    patch_pool,
    pods,
    pool_when,
    ready_pool,
    secret_path,
    sender_pool,
    service_path,
)
from tests.sender.conftest import campaign_wire, recipients

PASSWORD = "url-secret-pw-0123"  # the test's own Redis
HASH = "mailtrain.dev/restart-hash"


def _publish_one(url: str, password: str | None, pool: str) -> None:
    """A campaign of 3 recipients for a relay nobody listens on: it stays runnable, in the registry."""

    async def publish() -> None:
        client = AsyncRedis.from_url(url, password=password)
        try:
            await Publisher(client).publish(campaign_wire("stays", pool=pool), recipients("stays", 3))
        finally:
            await client.aclose()

    asyncio.run(publish())


def test_a_redis_change_rolls_the_pods_and_a_url_secret_reaches_them(
    operator: OperatorProcess,
    controlplane: ControlPlane,
    pool_namespace: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    kube, ns = controlplane.api, pool_namespace
    guarded = RedisServer(tmp_path / "redis").start()
    try:
        with guarded.client() as client:
            client.config_set("requirepass", PASSWORD)
        secret_url = f"redis://:{PASSWORD}@{net.LOOPBACK}:{guarded.port}/0"
        kube.create(
            f"/api/v1/namespaces/{ns}/secrets",
            {"metadata": {"name": "redis-url"}, "stringData": {"url": secret_url}},
        )
        create_pool(
            kube, ns, sender_pool("moving", net.free_port(), queue={"processes": 2}, redis={"url": redis_url})
        )
        ready_pool(kube, ns, "moving", 2)
        before = {p["metadata"]["uid"] for p in pods(kube, ns, "moving")}
        old_template = existing(kube, deployment_path(ns, "moving"))["spec"]["template"]

        patch_pool(
            kube, ns, "moving", {"redis": {"url": None, "urlSecretRef": {"name": "redis-url", "key": "url"}}}
        )
        pool = ready_pool(kube, ns, "moving", 2, timeout=120)
        after = pods(kube, ns, "moving")
        assert not before & {p["metadata"]["uid"] for p in after}  # every pod replaced
        template = existing(kube, deployment_path(ns, "moving"))["spec"]["template"]
        assert template["metadata"]["annotations"][HASH] != old_template["metadata"]["annotations"][HASH]
        [sender] = template["spec"]["containers"]
        assert {
            "name": "MAILTRAIN_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "redis-url", "key": "url"}},
        } in sender["env"]
        config = existing(kube, config_map_path(ns, "moving"))["data"]["sender.toml"]
        assert "url =" not in config and PASSWORD not in config
        with guarded.client() as client:
            client.auth(PASSWORD)
            workers = {
                w.decode() for w in client.zrange(PoolKeys(redis_pool_name(ns, "moving")).workers, 0, -1)
            }
        assert {p["metadata"]["name"] for p in after} <= workers
        assert pool["status"]["activeCampaigns"] == 0

        # The operator reads the registry through the Secret's URL too.
        _publish_one(f"redis://{net.LOOPBACK}:{guarded.port}/0", PASSWORD, redis_pool_name(ns, "moving"))
        pool_when(
            kube,
            ns,
            "moving",
            lambda p: (p.get("status") or {}).get("activeCampaigns") == 1,
            timeout=30,
            what="activeCampaigns 1",
        )
        assert PASSWORD not in operator.log_text()
    finally:
        guarded.stop()


def test_a_private_redis_pool_runs_one_sender_beside_its_redis(
    operator: OperatorProcess,
    controlplane: ControlPlane,
    local_node: LocalNode,
    pool_namespace: str,
) -> None:
    kube, ns = controlplane.api, pool_namespace
    create_pool(kube, ns, sender_pool("solo", net.free_port(), redis={"enabled": False}))
    pool = ready_pool(kube, ns, "solo", 1)
    assert pool["status"]["activeCampaigns"] == 0  # read from the private Redis, through its EndpointSlice

    deployment = kube.get(deployment_path(ns, "solo"))
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    [pod] = pods(kube, ns, "solo")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["sender", "redis"]
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])
    # redis-server runs as the pod's non-root user, whatever its image's default.
    pid = local_node.container_pids()[(pod["metadata"]["uid"], "redis")]
    status_lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    assert next(line for line in status_lines if line.startswith("Uid:")).split()[1:] == ["10001"] * 4
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "redis-server"

    service = kube.get(service_path(ns, "solo"))
    assert service is not None
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"metrics": 9090, "redis": 6379}
    secret = kube.get(secret_path(ns, "solo-sender-redis"))
    assert secret is not None and secret["metadata"]["ownerReferences"][0]["name"] == "solo"
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert re.fullmatch(r"[0-9a-f]{64}", password)

    # The private Redis wants its password, from the pod's address; nothing is persisted.
    address = pod["status"]["podIP"]
    with redis.Redis(host=address, port=6379, socket_timeout=5) as client:
        try:
            client.ping()
            raise AssertionError("the private Redis answered without a password")
        except redis.AuthenticationError:
            pass
    with redis.Redis(host=address, port=6379, password=password, socket_timeout=5) as client:
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.zrange(PoolKeys(redis_pool_name(ns, "solo")).workers, 0, -1) == [
            pod["metadata"]["name"].encode()
        ]

    _publish_one(f"redis://{address}:6379/0", password, redis_pool_name(ns, "solo"))
    pool_when(
        kube,
        ns,
        "solo",
        lambda p: (p.get("status") or {}).get("activeCampaigns") == 1,
        timeout=30,
        what="activeCampaigns 1, read from the private Redis",
    )
    # A reconcile leaves the generated password alone.
    patch_pool(kube, ns, "solo", {"queue": {"processes": 1, "maxParallelCampaigns": 4}})
    pool_when(
        kube,
        ns,
        "solo",
        lambda p: p["status"]["observedGeneration"] == p["metadata"]["generation"],
        timeout=30,
        what="the edit handled",
    )
    assert (
        existing(kube, secret_path(ns, "solo-sender-redis"))["data"]["password"] == secret["data"]["password"]
    )
    assert password not in operator.log_text()
    assert password not in local_node.container_log(ns, pod["metadata"]["name"], "redis")


def test_deleting_a_pool_deletes_its_children(
    operator: OperatorProcess, controlplane: ControlPlane, pool_namespace: str
) -> None:
    kube, ns = controlplane.api, pool_namespace
    create_pool(kube, ns, sender_pool("brief", net.free_port(), redis={"enabled": False}))
    paths = [
        deployment_path(ns, "brief"),
        config_map_path(ns, "brief"),
        service_path(ns, "brief"),
        secret_path(ns, "brief-sender-redis"),
    ]
    eventually(lambda: all(kube.get(p) for p in paths), timeout=30, what="the pool's children")
    ready_pool(kube, ns, "brief", 1)
    kube.delete(f"/apis/mailtrain.dev/v1alpha1/namespaces/{ns}/senderpools/brief")
    eventually(lambda: not any(kube.get(p) for p in paths), timeout=60, what="the children garbage-collected")
    eventually(lambda: not pods(kube, ns, "brief"), timeout=60, what="the pods gone")
