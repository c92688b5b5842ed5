"""The operator image as a pod on the local node: its entrypoint and user from the image table, settings
from `env`, kopf's liveness endpoint as the probe, and a bad setting a person can read in `kubectl logs`.

No RBAC is granted here, and the operator runs standalone: with no resource handlers yet, kopf needs
only its ServiceAccount token to start. test_rbac.py runs the image under the chart's rules, peered.
"""

from __future__ import annotations

from pathlib import Path

from tests.cluster.helpers import container_status, eventually, pod, pod_ip_env, ready_pod
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.local_node import LocalNode

IMAGE = "ghcr.io/mailtrain-operator/operator:0.1.0"


def _operator(namespace: str, port: int, **env: str) -> dict[str, object]:
    return {
        "name": "operator",
        "image": IMAGE,
        "env": [
            pod_ip_env(),
            {"name": "MAILTRAIN_OPERATOR_NAMESPACES", "value": namespace},
            {"name": "MAILTRAIN_OPERATOR_STANDALONE", "value": "true"},
            {"name": "MAILTRAIN_OPERATOR_HEALTH_LISTEN", "value": f"$(POD_IP):{port}"},
            # Pods share the node's ports here: not the default 0.0.0.0:9090.
            {"name": "MAILTRAIN_OPERATOR_METRICS_LISTEN", "value": f"$(POD_IP):{net.free_port()}"},
            *({"name": f"MAILTRAIN_OPERATOR_{k}", "value": v} for k, v in env.items()),
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1},
    }


def test_the_operator_image_runs_as_a_pod_and_answers_its_probe(
    controlplane: ControlPlane, local_node: LocalNode, namespace: str
) -> None:
    kube = controlplane.api
    kube.create(
        f"/api/v1/namespaces/{namespace}/pods", pod("operator", [_operator(namespace, net.free_port())])
    )
    try:
        running = eventually(
            lambda: ready_pod(kube, namespace, "operator"), timeout=60, what="operator ready"
        )
    except AssertionError as exc:
        log = controlplane.kubectl("logs", "-n", namespace, "operator", check=False)
        raise AssertionError(f"{exc}\n{log.stdout[-3000:]}{log.stderr}") from exc
    pid = local_node.container_pids()[(running["metadata"]["uid"], "operator")]
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    assert next(line for line in status if line.startswith("Uid:")).split()[1] == "10001"  # the image's USER
    logs = controlplane.kubectl("logs", "-n", namespace, "operator").stdout
    assert f"mailtrain-operator started: watching {namespace}, standalone" in logs


def test_a_bad_setting_in_the_pod_is_one_line_in_its_log_and_exit_code_2(
    controlplane: ControlPlane, local_node: LocalNode, namespace: str
) -> None:
    kube = controlplane.api
    container = _operator(namespace, net.free_port(), LOG_LEVEL="verbose")
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod("bad", [container], restartPolicy="Never"))

    def terminated() -> dict[str, object] | None:
        found = kube.get(f"/api/v1/namespaces/{namespace}/pods/bad") or {}
        state = container_status(found, "operator").get("state", {})
        return state.get("terminated")  # type: ignore[no-any-return]

    ended = eventually(terminated, timeout=60, what="the operator container exited")
    assert ended["exitCode"] == 2
    logs = controlplane.kubectl("logs", "-n", namespace, "bad").stdout.strip().splitlines()
    expected = "Input should be 'debug', 'info', 'warning' or 'error' (got 'verbose')"
    assert logs == [f"mailtrain-operator: MAILTRAIN_OPERATOR_LOG_LEVEL: {expected}"]
