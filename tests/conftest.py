"""Session-wide real components: control plane, node, Redis, SMTP sinks.

Each fixture starts a real server and tears it down. A missing binary fails the
test with the reason (see tests.harness.binaries), it never skips.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.local_node import LocalNode
from tests.harness.redis_server import RedisServer
from tests.harness.smtp_sink import PostfixSink, RecordingSink


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def local_node(controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    """The cluster's node: a node agent that runs the pods bound to it as local processes."""
    node = LocalNode(controlplane, tmp_path_factory.mktemp("node")).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def namespace(controlplane: ControlPlane) -> Iterator[str]:
    """A fresh namespace for the test, with its `default` ServiceAccount, deleted afterwards (without
    waiting: the namespace controller finishes it in the background)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    controlplane.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while controlplane.api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default") is None:
        assert time.monotonic() < deadline, f"the controller-manager made no ServiceAccount in {name}"
        time.sleep(0.05)
    yield name
    controlplane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test may have killed it on purpose
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def make_recording_sink(tmp_path: Path) -> Iterator[Callable[..., RecordingSink]]:
    started: list[RecordingSink] = []

    def make(**kwargs: Any) -> RecordingSink:
        sink = RecordingSink(tmp_path / "smtp", **kwargs).start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.stop()


@pytest.fixture
def smtp_sink(make_recording_sink: Callable[..., RecordingSink]) -> RecordingSink:
    return make_recording_sink()


@pytest.fixture
def make_postfix_sink(tmp_path: Path) -> Iterator[Callable[..., PostfixSink]]:
    started: list[PostfixSink] = []

    def make(**kwargs: Any) -> PostfixSink:
        sink = PostfixSink(tmp_path / "postfix", **kwargs).start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.stop()
