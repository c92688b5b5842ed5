"""Who a pod is: its projected ServiceAccount token authenticates it, and Pod Security admission holds."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.helpers import deployment, eventually, pod, pods_of, program, ready
from tests.harness.kubeapi import Json, KubeApi
from tests.harness.local_node import LocalNode


def test_projected_token_authenticates_as_the_pods_service_account(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "reader"}})
    body = pod("whoami", [program("client", "whoami.py")], serviceAccountName="reader")
    kube.create(f"/api/v1/namespaces/{namespace}/pods", body)

    def log() -> str:
        return local_node.container_log(namespace, "whoami", "client")

    eventually(lambda: "status 403" in log(), timeout=30, what="403 before any RoleBinding")
    assert "status 401" not in log()  # the token is valid; only the permission is missing
    role = {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    }
    kube.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles", role)
    binding = {
        "metadata": {"name": "pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }
    kube.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", binding)
    eventually(lambda: "status 200" in log(), timeout=30, what="200 once the RoleBinding exists")


def test_automount_false_mounts_no_token(kube: KubeApi, namespace: str, local_node: LocalNode) -> None:
    token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    for name, automount in (("with-token", True), ("without-token", False)):
        body = pod(name, [program("watcher", "watch_file.py", token)], automountServiceAccountToken=automount)
        kube.create(f"/api/v1/namespaces/{namespace}/pods", body)
    eventually(
        lambda: "content 'ey" in local_node.container_log(namespace, "with-token", "watcher"),
        timeout=30,
        what="a JWT at the token path",
    )
    eventually(
        lambda: (
            "No such file or directory" in local_node.container_log(namespace, "without-token", "watcher")
        ),
        timeout=30,
        what="no token without automount",
    )


def _restricted(name: str, **security: object) -> Json:
    container = program(
        name,
        "signals.py",
        securityContext={
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
            **security,
        },
    )
    return deployment(name, 1, [container])


def test_pod_security_restricted_rejects_privileged_pods_and_admits_compliant_ones(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    kube.patch(
        f"/api/v1/namespaces/{namespace}",
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        _restricted("privileged", privileged=True, allowPrivilegeEscalation=True),
    )
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", _restricted("compliant"))

    def failed_create() -> Json | None:
        events = kube.list(f"/api/v1/namespaces/{namespace}/events", fieldSelector="reason=FailedCreate")
        return next((e for e in events if e["involvedObject"]["kind"] == "ReplicaSet"), None)

    event = eventually(failed_create, timeout=30, what="FailedCreate on the privileged ReplicaSet")
    assert event["involvedObject"]["name"].startswith("privileged-")
    assert 'violates PodSecurity "restricted:latest": privileged' in event["message"]
    assert pods_of(kube, namespace, "privileged") == []

    [admitted] = eventually(
        lambda: [p for p in pods_of(kube, namespace, "compliant") if ready(p)],
        timeout=30,
        what="compliant pod",
    )

    def container_status() -> dict[str, str] | None:
        # The container's process starts as the agent's wrapper (mounts, cgroup) and execs the program
        # as runAsUser a moment later; a probe that passes at once can make the pod Ready in between.
        pid = local_node.container_pids()[(admitted["metadata"]["uid"], "compliant")]
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
        return status if status["Uid"].split()[0] != "0" else None

    status = eventually(container_status, timeout=10, what="the container's program running as runAsUser")
    assert status["Uid"].split()[:2] == ["10001", "10001"]  # runAsUser became the process's uid
    assert status["Gid"].split()[:2] == ["10001", "10001"]
    assert status["NoNewPrivs"].strip() == "1"  # allowPrivilegeEscalation: false
