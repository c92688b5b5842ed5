"""The kubernetes package's API classes the operator calls are loaded when the operator's modules are
imported, before kopf runs, not on the event loop at their first use (see kube.PRELOADED)."""

from __future__ import annotations

import subprocess
import sys

LAZY = (
    "kubernetes.client.api.core_v1_api",
    "kubernetes.client.api.discovery_v1_api",
    "kubernetes.client.api.custom_objects_api",
    "kubernetes.client.models.v1_secret",
    "kubernetes.client.models.v1_config_map",
    "kubernetes.client.models.v1_endpoint_slice_list",
)
PROBE = f"""
import sys
before = {{name for name in {LAZY!r} if name in sys.modules}}
import mailtrain_operator.handlers
after = {{name for name in {LAZY!r} if name in sys.modules}}
print(sorted(before), sorted(after))
"""


def test_the_api_modules_are_loaded_with_the_operator_not_at_first_use() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    before, after = done.stdout.strip().split("] [")
    assert before == "[", done.stdout  # the kubernetes package loads them lazily: nothing yet
    assert sorted(after.rstrip("]").replace("'", "").split(", ")) == sorted(LAZY), done.stdout
