"""`mailtrain-operator delete-pools`: the chart's pre-delete hook, which deletes the SenderPools of a
release and waits until they are gone, while the operator still runs.

Why: a SenderPool carries the operator's finalizer (kopf puts one on every object with a daemon,
and the pool's status loop is one). `helm uninstall` deletes every object of a release at once,
the operator's Deployment and RBAC with the pools, and kinds it does not know last; the operator is
gone before it can release the pools, which then stay Terminating for ever, and with them their
Deployments and sender processes. Deleted first, each pool is released by a running operator, and
garbage collection takes its children.

Blocking calls on purpose: a one-shot command with nothing else to do. Exit codes: 0 every pool
gone, 1 some still there at the deadline (named on stderr), so the uninstall stops and says why.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mailtrain_operator import kube

GROUP, VERSION, PLURAL = "mailtrain.dev", "v1alpha1", "senderpools"
POLL_SECONDS = 1.0


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(
        prog="mailtrain-operator delete-pools",
        description="Delete the SenderPools that match a label selector, and wait until they are gone.",
    )
    found.add_argument("--namespace", action="append", required=True, help="where pools are (repeatable)")
    found.add_argument("--selector", required=True, help="label selector, e.g. app.kubernetes.io/instance=x")
    found.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the pools to go")
    return found


def _names(api: client.CustomObjectsApi, namespace: str, selector: str) -> list[str]:
    listed = cast(
        "dict[str, Any]",
        api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, label_selector=selector),
    )
    return [item["metadata"]["name"] for item in listed["items"]]


def delete_pools(namespaces: list[str], selector: str, timeout: float) -> list[str]:
    """Deletes the pools; returns those still there at the deadline, as namespace/name."""
    api = client.CustomObjectsApi(kube.api_client())
    for namespace in namespaces:
        for name in _names(api, namespace, selector):
            try:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                continue  # gone meanwhile
            print(f"deleting SenderPool {namespace}/{name}", flush=True)
    deadline = time.monotonic() + timeout
    while True:
        left = [f"{ns}/{name}" for ns in namespaces for name in _names(api, ns, selector)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_SECONDS)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    left = delete_pools(sorted(set(args.namespace)), args.selector, args.timeout)
    if left:
        print(
            f"mailtrain-operator delete-pools: still there after {args.timeout:g} s: {', '.join(left)} "
            "(is the operator running? it removes their finalizer)",
            file=sys.stderr,
        )
        return 1
    print("every SenderPool is gone", flush=True)
    return 0
