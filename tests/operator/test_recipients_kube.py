"""ConfigMap and Secret sources against the real apiserver: what is read, and what a person is told."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.config import kube_config

from mailtrain_operator import kube
from mailtrain_operator.api.mailcampaign import KeyRef, Recipients
from mailtrain_operator.recipients import SourceError, open_source
from mailtrain_operator.settings import OperatorSettings
from tests.harness.controlplane import ControlPlane

CSV = "email,name,plan\nann@example.org,Ann,pro\nno-address,X,free\nANN@example.org,Ann again,pro\n"
JSONL = '{"email": "bob@example.org", "name": "Bob"}\n{"email": "cy@example.org", "vars": {"n": 1}}\n'


def use_kubeconfig(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """kube.api_client() outside a pod loads the default kubeconfig: point it at this one."""
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    kube.api_client.cache_clear()


@pytest.fixture
def as_admin(controlplane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    use_kubeconfig(monkeypatch, controlplane.kubeconfig)
    yield controlplane
    kube.api_client.cache_clear()


def config_map(plane: ControlPlane, namespace: str, name: str, **body: Any) -> None:
    plane.api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **body},
    )


def secret(plane: ControlPlane, namespace: str, name: str, data: dict[str, bytes]) -> None:
    encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
    plane.api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded},
    )


async def load(namespace: str, recipients: Recipients) -> tuple[list[tuple[str, Any, Any]], Any]:
    async with open_source(namespace, recipients, OperatorSettings()) as stream:
        got = [(r.email, r.name, r.vars) async for r in stream]
    return got, stream.counts


async def failure(namespace: str, recipients: Recipients) -> SourceError:
    with pytest.raises(SourceError) as caught:
        await load(namespace, recipients)
    return caught.value


async def test_a_config_map_key_is_read_from_data_or_binary_data(
    as_admin: ControlPlane, namespace: str
) -> None:
    config_map(
        as_admin,
        namespace,
        "lists",
        data={"july.csv": CSV},
        binaryData={"june.jsonl": base64.b64encode(b"\xef\xbb\xbf" + JSONL.encode()).decode()},
    )
    got, counts = await load(namespace, Recipients(config_map_ref=KeyRef(name="lists", key="july.csv")))
    assert got == [("ann@example.org", "Ann", {"plan": "pro"})]
    assert (counts.invalid, counts.duplicates) == (1, 1)
    ref = KeyRef(name="lists", key="june.jsonl", format="jsonl")
    got, _ = await load(namespace, Recipients(config_map_ref=ref))
    assert got == [("bob@example.org", "Bob", None), ("cy@example.org", None, {"n": 1})]


async def test_a_config_map_list_that_is_not_utf8_names_the_line(
    as_admin: ControlPlane, namespace: str
) -> None:
    """kubectl create configmap --from-file puts such a file into binaryData."""
    latin1 = "email,name\nann@example.org,Ann\njo@example.org,Jürgen\n".encode("latin-1")
    config_map(as_admin, namespace, "lists", binaryData={"l.csv": base64.b64encode(latin1).decode()})
    error = await failure(namespace, Recipients(config_map_ref=KeyRef(name="lists", key="l.csv")))
    assert (error.reason, error.message) == (
        "NotUtf8",
        "line 3 is not UTF-8 text (byte 0xFC); save the list as UTF-8 (in Excel: CSV UTF-8)",
    )


async def test_a_missing_config_map_or_key_says_which(as_admin: ControlPlane, namespace: str) -> None:
    missing = await failure(namespace, Recipients(config_map_ref=KeyRef(name="lists", key="l.csv")))
    assert (missing.reason, missing.message) == (
        "ConfigMapNotFound",
        f"ConfigMap {namespace}/lists (recipients.configMapRef) does not exist",
    )
    config_map(as_admin, namespace, "lists", data={"june.csv": CSV})
    no_key = await failure(namespace, Recipients(config_map_ref=KeyRef(name="lists", key="july.csv")))
    assert (no_key.reason, no_key.message) == (
        "ConfigMapKeyNotFound",
        f"ConfigMap {namespace}/lists (recipients.configMapRef) has no key 'july.csv'",
    )


async def test_a_secret_key_is_read_and_never_logged(
    as_admin: ControlPlane, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    private = "email,name,code\nvip@example.org,Vip,s3cr3t-c0de-4711\nnot-an-address,X,0815-hidden\n"
    secret(as_admin, namespace, "vip-list", {"l.csv": private.encode()})
    with caplog.at_level(logging.DEBUG):
        got, counts = await load(namespace, Recipients(secret_ref=KeyRef(name="vip-list", key="l.csv")))
    assert got == [("vip@example.org", "Vip", {"code": "s3cr3t-c0de-4711"})]
    assert counts.invalid == 1
    assert [str(e) for e in counts.examples] == ["line 3: An email address must have an @-sign."]
    assert caplog.records, "nothing was logged at DEBUG: the check below would prove nothing"
    for secret_part in (
        "s3cr3t",
        "0815-hidden",
        "vip@example.org",
        base64.b64encode(private.encode())[:20].decode(),
    ):
        assert secret_part not in caplog.text


async def test_a_missing_secret_or_key_says_which(as_admin: ControlPlane, namespace: str) -> None:
    missing = await failure(namespace, Recipients(secret_ref=KeyRef(name="vip", key="l.csv")))
    assert (missing.reason, missing.message) == (
        "SecretNotFound",
        f"Secret {namespace}/vip (recipients.secretRef) does not exist",
    )
    secret(as_admin, namespace, "vip", {"other": b"x"})
    no_key = await failure(namespace, Recipients(secret_ref=KeyRef(name="vip", key="l.csv")))
    assert (no_key.reason, no_key.message) == (
        "SecretKeyNotFound",
        f"Secret {namespace}/vip (recipients.secretRef) has no key 'l.csv'",
    )


def _grant_get(plane: ControlPlane, namespace: str, user: str, resource: str, name: str) -> None:
    plane.kubectl(
        "create", "role", f"get-{name}", "--verb=get", f"--resource={resource}", f"--resource-name={name}",
        "-n", namespace,
    )  # fmt: skip
    plane.kubectl(
        "create", "rolebinding", f"get-{name}", f"--role=get-{name}", f"--user={user}", "-n", namespace
    )


def _wait_until_allowed(plane: ControlPlane, kind: str, name: str, namespace: str, kubeconfig: Path) -> None:
    """The authorizer follows a new binding within moments; no event says when."""
    deadline = time.monotonic() + 15
    while True:
        got = plane.kubectl("get", kind, name, "-n", namespace, kubeconfig=kubeconfig, check=False)
        if got.returncode == 0:
            return
        assert "Forbidden" in got.stderr and time.monotonic() < deadline, got.stderr
        time.sleep(0.1)


async def test_get_on_the_named_objects_is_all_the_operator_needs(
    controlplane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_map(controlplane, namespace, "lists", data={"l.csv": CSV})
    config_map(controlplane, namespace, "other-lists", data={"l.csv": CSV})
    secret(controlplane, namespace, "vip", {"l.jsonl": JSONL.encode()})
    secret(controlplane, namespace, "other-vip", {"l.jsonl": JSONL.encode()})
    user = f"recipients-reader-{namespace}"
    _grant_get(controlplane, namespace, user, "configmaps", "lists")
    _grant_get(controlplane, namespace, user, "secrets", "vip")
    reader = controlplane.kubeconfig_for(user)
    _wait_until_allowed(controlplane, "configmap", "lists", namespace, reader)
    _wait_until_allowed(controlplane, "secret", "vip", namespace, reader)
    use_kubeconfig(monkeypatch, reader)
    try:
        got, _ = await load(namespace, Recipients(config_map_ref=KeyRef(name="lists", key="l.csv")))
        assert [email for email, _, _ in got] == ["ann@example.org"]
        vip = KeyRef(name="vip", key="l.jsonl", format="jsonl")
        got, _ = await load(namespace, Recipients(secret_ref=vip))
        assert [email for email, _, _ in got] == ["bob@example.org", "cy@example.org"]

        other = await failure(namespace, Recipients(config_map_ref=KeyRef(name="other-lists", key="l.csv")))
        assert (other.reason, other.message) == (
            "ConfigMapForbidden",
            f"the operator may not read ConfigMap {namespace}/other-lists (recipients.configMapRef): "
            "check its RBAC scope",
        )
        other_vip = KeyRef(name="other-vip", key="l.jsonl", format="jsonl")
        other = await failure(namespace, Recipients(secret_ref=other_vip))
        assert (other.reason, other.message) == (
            "SecretForbidden",
            f"the operator may not read Secret {namespace}/other-vip (recipients.secretRef): "
            "check its RBAC scope",
        )
    finally:
        kube.api_client.cache_clear()
