"""The node agent's rules that need no cluster: Kubernetes' own expansion, image naming, phases, the
atomic writer's layout, back-off and token refresh schedules, pod addresses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.node_agent.atomic_writer import DATA, write_atomic
from tests.harness.node_agent.containers import Backoff
from tests.harness.node_agent.fields import field_value, resource_value
from tests.harness.node_agent.images import LocalImage, container_argv, expand, normalize
from tests.harness.node_agent.network import AddressPool
from tests.harness.node_agent.status import ContainerStatus, pod_phase
from tests.harness.node_agent.volumes import Mount, hidden_image_dirs, token_refresh_delay


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("$(A)", "a"),
        ("x$(A)y$(B)", "xayb"),
        ("$$(A)", "$(A)"),  # escaped
        ("$$$(A)", "$a"),
        ("$(MISSING)", "$(MISSING)"),  # left as it is
        ("$(A", "$(A"),  # unterminated
        ("$", "$"),
        ("a$b", "a$b"),
        ("$()", "$()"),
    ],
)
def test_expansion_follows_kubernetes(text: str, expanded: str) -> None:
    assert expand(text, {"A": "a", "B": "b"}) == expanded


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("redis", "docker.io/library/redis"),
        ("redis:7.0", "docker.io/library/redis"),
        ("docker.io/redis", "docker.io/library/redis"),
        ("index.docker.io/library/redis:7@sha256:abcd", "docker.io/library/redis"),
        ("bitnami/redis:7", "docker.io/bitnami/redis"),
        ("ghcr.io/mailtrain-operator/sender:0.1.0", "ghcr.io/mailtrain-operator/sender"),
        ("localhost:5000/sender:dev", "localhost:5000/sender"),
    ],
)
def test_image_references_normalize_as_docker_does(reference: str, repository: str) -> None:
    assert normalize(reference) == repository


def test_command_and_args_replace_entrypoint_and_cmd_by_kubernetes_rules() -> None:
    image = LocalImage(("x",), entrypoint=("/entry",), cmd=("--default",))
    env = {"PORT": "6380"}
    assert container_argv(image, {}, env) == ["/entry", "--default"]
    assert container_argv(image, {"args": ["--port", "$(PORT)"]}, env) == ["/entry", "--port", "6380"]
    assert container_argv(image, {"command": ["/other"]}, env) == ["/other"]  # the image's cmd is dropped
    assert container_argv(image, {"command": ["/other"], "args": ["a"]}, env) == ["/other", "a"]


def _status(state: dict[str, object], last: dict[str, object] | None = None) -> ContainerStatus:
    status = ContainerStatus("c", "img")
    status.state, status.last_state = state, last or {}
    return status


def test_pod_phase_follows_the_kubelet() -> None:
    running = _status({"running": {}})
    creating = _status({"waiting": {"reason": "ContainerCreating"}})
    done, failed = _status({"terminated": {"exitCode": 0}}), _status({"terminated": {"exitCode": 1}})
    backing_off = _status({"waiting": {"reason": "CrashLoopBackOff"}}, {"terminated": {"exitCode": 1}})
    assert pod_phase([creating], "Always", True, False) == "Pending"
    assert pod_phase([running, creating], "Always", True, False) == "Pending"
    assert pod_phase([running], "Always", False, False) == "Pending"
    assert pod_phase([running, done], "Never", True, False) == "Running"
    assert pod_phase([backing_off], "Always", True, False) == "Running"
    assert pod_phase([done], "Never", True, False) == "Succeeded"
    assert pod_phase([done, failed], "Never", True, False) == "Failed"
    assert pod_phase([failed], "OnFailure", True, False) == "Running"
    assert pod_phase([done], "Always", True, False) == "Running"  # about to restart
    assert pod_phase([done], "Always", True, True) == "Succeeded"  # deleted: it ends
    assert pod_phase([failed], "Always", True, True) == "Failed"


def test_atomic_writer_swaps_one_symlink_and_drops_removed_keys(tmp_path: Path) -> None:
    volume = tmp_path / "config"
    assert write_atomic(volume, {"a.toml": (b"1", 0o644), "b": (b"2", 0o600)})
    first = os.readlink(volume / DATA)
    assert os.readlink(volume / "a.toml") == f"{DATA}/a.toml"
    assert (volume / "a.toml").read_bytes() == b"1"
    assert (volume / "b").stat().st_mode & 0o777 == 0o600
    assert not write_atomic(volume, {"a.toml": (b"1", 0o644), "b": (b"2", 0o600)})  # nothing changed
    assert os.readlink(volume / DATA) == first

    assert write_atomic(volume, {"a.toml": (b"3", 0o644)})
    assert os.readlink(volume / DATA) != first
    assert (volume / "a.toml").read_bytes() == b"3"
    assert not (volume / "b").exists() and not (volume / "b").is_symlink()
    assert not (volume / first).exists()  # the old payload is gone
    assert sorted(p.name for p in volume.iterdir()) == sorted([DATA, "a.toml", os.readlink(volume / DATA)])


def test_backoff_is_immediate_then_doubles_from_ten_seconds_up_to_five_minutes() -> None:
    backoff = Backoff()
    assert [backoff.next(1.0) for _ in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert backoff.next(600.0) == 0  # a container that ran for 10 minutes starts over


def test_tokens_are_replaced_at_80_percent_of_their_life_and_at_least_daily() -> None:
    assert token_refresh_delay(3607) == pytest.approx(2885.6)
    assert token_refresh_delay(600) == pytest.approx(480)
    assert token_refresh_delay(365 * 24 * 3600) == 24 * 3600


def test_downward_api_values() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"b": "2", "a": "1"}},
        "spec": {
            "nodeName": "local-0",
            "containers": [
                {"name": "c", "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}
            ],
        },
    }
    assert field_value(pod, "metadata.labels", "10.244.1.2", "127.0.0.1") == 'a="1"\nb="2"'
    assert field_value(pod, "metadata.labels['b']", "", "") == "2"
    assert field_value(pod, "status.podIP", "10.244.1.2", "127.0.0.1") == "10.244.1.2"
    allocatable = {"cpu": "2", "memory": "1Gi"}
    assert resource_value(pod, "c", "limits.memory", "1Mi", allocatable) == "64"
    assert resource_value(pod, "c", "requests.cpu", "1m", allocatable) == "250"
    assert resource_value(pod, "c", "limits.cpu", None, allocatable) == "2"  # no limit: the node's


def test_address_pool_hands_out_distinct_addresses_and_keeps_a_pods_own(tmp_path: Path) -> None:
    pool = AddressPool(tmp_path / "network.json")
    try:
        first, second = pool.allocate("a"), pool.allocate("b")
        assert first != second and pool.owns(first) and pool.owns(second)
        assert pool.allocate("a") == first
        pool.release("a")
        assert pool.allocate("c") not in (first, second)  # a freed address is not reused at once
        pool.release("b")
        assert pool.allocate("d", preferred=second) == second  # after an agent restart
    finally:
        pool.close()
    again = AddressPool(tmp_path / "network.json")  # the same range, for the pods it adopts
    try:
        assert again.range == pool.range
    finally:
        again.close()


def test_an_images_directory_below_a_mount_is_bound_back_read_only_and_no_other() -> None:
    tmp = Mount(Path("/node/.tmp/main"), "/tmp", read_only=False)
    data = Mount(Path("/node/volumes/data"), "/srv/data", read_only=False)
    directories = ["/tmp/checkout", "/tmp", "/srv/data/x/", "/usr/lib/python3", "/tmpfoo/checkout"]
    assert hidden_image_dirs([tmp, data], directories) == [
        Mount(Path("/tmp/checkout"), "/tmp/checkout", read_only=True),
        Mount(Path("/srv/data/x"), "/srv/data/x", read_only=True),
    ]
    assert hidden_image_dirs([], directories) == []
