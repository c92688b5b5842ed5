"""Fixtures for tests against the local cluster: the admin's API client, on a cluster whose node is up."""

from __future__ import annotations

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import KubeApi
from tests.harness.local_node import LocalNode


@pytest.fixture
def kube(controlplane: ControlPlane, local_node: LocalNode) -> KubeApi:
    return controlplane.api
