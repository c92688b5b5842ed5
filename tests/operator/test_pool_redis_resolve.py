"""pool_redis.resolve against the real apiserver: where a pool's Redis is, for each way a spec names it
(a URL, a Secret's URL, the private Redis behind the pool's EndpointSlices), and what it says when it
cannot tell yet. The operator's own client (kube.py) is used, as in the operator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mailtrain_operator import kube, pool_redis
from mailtrain_operator.api import SenderPoolSpec
from mailtrain_operator.pool_redis import PoolRedisUnavailable, RedisTarget, resolve
from tests.harness import net
from tests.harness.controlplane import ControlPlane

PASSWORD = "resolve-pw"


@pytest.fixture
def operator_client(controlplane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    """kube.py's client, configured from the test apiserver's kubeconfig (as the operator outside a pod)."""
    monkeypatch.setenv("KUBECONFIG", str(controlplane.kubeconfig))
    monkeypatch.setenv("NO_PROXY", net.LOOPBACK)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube.api_client.cache_clear()
    yield controlplane
    kube.api_client.cache_clear()


def _spec(**redis: Any) -> SenderPoolSpec:
    return SenderPoolSpec.model_validate({"redis": redis, "smtp": {"host": "smtp.example.com"}})


def _secret(plane: ControlPlane, namespace: str, name: str, **data: str) -> None:
    plane.api.create(
        f"/api/v1/namespaces/{namespace}/secrets", {"metadata": {"name": name}, "stringData": data}
    )


async def _unavailable(namespace: str, spec: SenderPoolSpec) -> PoolRedisUnavailable:
    with pytest.raises(PoolRedisUnavailable) as caught:
        await resolve(namespace, "news", spec)
    return caught.value


async def test_a_url_is_the_target_as_it_is(operator_client: ControlPlane, namespace: str) -> None:
    target = await resolve(namespace, "news", _spec(url="redis://redis.mail:6379/3"))
    assert target == RedisTarget("redis://redis.mail:6379/3")


async def test_a_url_from_a_secret_with_its_password(operator_client: ControlPlane, namespace: str) -> None:
    spec = _spec(urlSecretRef={"name": "redis-conn", "key": "url"})
    missing = await _unavailable(namespace, spec)
    assert missing.reason == "SecretNotFound"
    assert f"Secret {namespace}/redis-conn (redis.urlSecretRef) does not exist" in missing.message

    _secret(operator_client, namespace, "redis-conn", other="x")
    no_key = await _unavailable(namespace, spec)
    assert (no_key.reason, no_key.message) == (
        "SecretKeyNotFound",
        f"Secret {namespace}/redis-conn (redis.urlSecretRef) has no key 'url'",
    )

    operator_client.api.patch(
        f"/api/v1/namespaces/{namespace}/secrets/redis-conn",
        {"stringData": {"url": f"redis://:{PASSWORD}@redis.mail:6379/1\n"}},
    )
    target = await resolve(namespace, "news", spec)
    assert target.url == f"redis://:{PASSWORD}@redis.mail:6379/1"  # the line end a file editor added, gone
    assert repr(target) == "RedisTarget(url='redis://:***@redis.mail:6379/1')"  # what a log line would show


async def test_no_redis_named(operator_client: ControlPlane, namespace: str) -> None:
    problem = await _unavailable(namespace, _spec())
    assert problem.reason == "RedisNotConfigured"


def _endpoint_slice(name: str, address_type: str, address: str, ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            # Ours, not the EndpointSlice controller's: it leaves a slice it does not manage alone.
            "labels": {
                "kubernetes.io/service-name": "news-sender",
                "endpointslice.kubernetes.io/managed-by": "test",
            },
        },
        "addressType": address_type,
        "ports": [
            {"name": "metrics", "port": 9090, "protocol": "TCP"},
            {"name": "redis", "port": 6379, "protocol": "TCP"},
        ],
        "endpoints": [{"addresses": [address], "conditions": {"ready": ready}}],
    }


async def test_the_private_redis_behind_the_pools_endpoint_slices(
    operator_client: ControlPlane, namespace: str
) -> None:
    spec = _spec(enabled=False)
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    assert (await _unavailable(namespace, spec)).reason == "RedisNotReady"  # no slice yet

    operator_client.api.create(slices, _endpoint_slice("news-sender-a", "IPv4", "10.244.9.9", ready=False))
    assert (await _unavailable(namespace, spec)).reason == "RedisNotReady"  # its only pod is not ready

    operator_client.api.patch(
        f"{slices}/news-sender-a",
        {"endpoints": [{"addresses": ["10.244.9.9"], "conditions": {"ready": True}}]},
    )
    no_secret = await _unavailable(namespace, spec)
    assert no_secret.reason == "SecretNotFound" and "news-sender-redis" in no_secret.message

    _secret(operator_client, namespace, pool_redis.private_redis_secret_name("news"), password=PASSWORD)
    assert await resolve(namespace, "news", spec) == RedisTarget("redis://10.244.9.9:6379/0", PASSWORD)

    # An IPv6 pod address goes in brackets.
    operator_client.api.delete(f"{slices}/news-sender-a")
    operator_client.api.create(slices, _endpoint_slice("news-sender-b", "IPv6", "fd00::9", ready=True))
    assert (await resolve(namespace, "news", spec)).url == "redis://[fd00::9]:6379/0"
