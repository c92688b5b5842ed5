"""The chart's ServiceAccount and RBAC rules, rendered with the real `helm template` and installed on the
test's apiserver, and the questions the RBAC tests ask of them.

The tables say what the operator needs and what it must never have; the tests ask the apiserver's
authorizer each one, for `system:serviceaccount:<ns>:<sa>`, so the answer is RBAC's own: with
`kubectl auth can-i --as=...`, and for the long tables with the SubjectAccessReview it sends.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.harness import binaries
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json

CHART = binaries.REPO_ROOT / "helm" / "mailtrain-operator"
PEERING = "mailtrain-operator"  # the chart's default peering.name
POOLS, CAMPAIGNS = "senderpools.mailtrain.dev", "mailcampaigns.mailtrain.dev"
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
CHILD_VERBS = ("get", "list", "watch", "create", "patch", "delete")

# (verb, resource, subresource or "") the operator needs in every namespace it watches.
NEEDED: list[tuple[str, str, str]] = [
    *((verb, kind, "") for kind in (POOLS, CAMPAIGNS) for verb in ("get", "list", "watch", "patch")),
    ("patch", POOLS, "status"),
    ("patch", CAMPAIGNS, "status"),
    *((verb, kind, "") for kind in ("deployments.apps", "configmaps", "services") for verb in CHILD_VERBS),
    ("get", "secrets", ""),  # by name: the Secrets a spec names
    ("create", "secrets", ""),  # the private Redis password Secret
    ("get", "endpointslices.discovery.k8s.io", ""),
    ("list", "endpointslices.discovery.k8s.io", ""),
    ("list", "pods", ""),  # why a pool's pod cannot start, for its status
    ("create", "events", ""),
]
# What it must not do in a namespace it watches.
FORBIDDEN: list[tuple[str, str, str]] = [
    *((verb, "secrets", "") for verb in ("list", "watch", "update", "patch", "delete", "deletecollection")),
    *((verb, kind, "") for kind in (POOLS, CAMPAIGNS) for verb in ("create", "update", "delete")),
    *((verb, kind, "scale") for kind in (POOLS, CAMPAIGNS) for verb in ("get", "update", "patch")),
    ("update", CAMPAIGNS, "status"),
    ("update", "deployments.apps", ""),
    *((verb, "pods", "") for verb in ("get", "watch", "create", "delete")),  # list only: see NEEDED
    ("create", "serviceaccounts", "token"),
    ("create", "events.events.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
]


def peering_rules(resource: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Needed and forbidden on kopf's peering kind `resource`: any object listed and watched; only ours
    read and written; none created (the chart renders ours)."""
    needed = [("list", resource, ""), ("watch", resource, "")]
    needed += [("get", f"{resource}/{PEERING}", ""), ("patch", f"{resource}/{PEERING}", "")]
    forbidden = [(verb, f"{resource}/someone-else", "") for verb in ("get", "patch", "update", "delete")]
    return needed, [*forbidden, ("delete", f"{resource}/{PEERING}", ""), ("create", resource, "")]


# The templates these tests install: the identity, its rules and the peering objects, not the
# operator's Deployment (which would start operators in the test's namespace) nor the rest
# (tests/chart/ covers the whole chart).
TEMPLATES = ("templates/serviceaccount.yaml", "templates/rbac.yaml", "templates/peering.yaml")


def render(
    release: str, namespace: str, directory: Path, templates: tuple[str, ...] = TEMPLATES, **values: object
) -> list[Json]:
    values_file = directory / f"{release}-values.json"
    values_file.write_text(json.dumps(values))
    env = {"HOME": str(directory), "PATH": "/usr/bin:/bin"}
    helm = binaries.controlplane_binary("helm")
    command = [str(helm), "template", release, str(CHART), "-n", namespace, "-f", str(values_file)]
    command += [f"--show-only={template}" for template in templates]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass
class Installed:
    plane: ControlPlane
    namespace: str
    documents: list[Json]

    @property
    def service_account(self) -> str:
        [account] = [d for d in self.documents if d["kind"] == "ServiceAccount"]
        return str(account["metadata"]["name"])

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def can_i(self, verb: str, resource: str, subresource: str = "", namespace: str | None = None) -> bool:
        """`kubectl auth can-i` for the operator's ServiceAccount (namespace None: all namespaces)."""
        args = ["auth", "can-i", verb, resource, f"--as={self.user}"]
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        args += [f"--subresource={subresource}"] if subresource else []
        answer = self.plane.kubectl(*args, check=False)
        assert answer.stdout.strip() in ("yes", "no"), answer.stderr
        return answer.stdout.strip() == "yes"

    def allowed(self, verb: str, resource: str, subresource: str = "", namespace: str | None = None) -> bool:
        """The same question as `can_i`, as the SubjectAccessReview kubectl would send: the apiserver's
        authorizer answers it without a kubectl process (about 0.4 s each), so whole tables are cheap."""
        resource, _, name = resource.partition("/")
        resource, _, group = resource.partition(".")
        # The groups the apiserver gives an impersonated ServiceAccount, as for its own token.
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{self.namespace}"]
        groups.append("system:authenticated")
        attributes = {"verb": verb, "group": group, "resource": resource, "subresource": subresource}
        attributes |= {"name": name, "namespace": namespace or ""}
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": self.user, "groups": groups, "resourceAttributes": attributes},
        }
        answer = self.plane.api.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(answer["status"].get("allowed"))

    def answers(self, questions: list[tuple[str, str, str]], namespace: str | None) -> dict[str, bool]:
        """{"verb resource[/subresource]": allowed} for each question."""
        return {
            f"{verb} {resource}{'/' + sub if sub else ''}": self.allowed(verb, resource, sub, namespace)
            for verb, resource, sub in questions
        }


def install(
    plane: ControlPlane,
    release: str,
    namespace: str,
    directory: Path,
    values: dict[str, object] | None = None,
    *,
    templates: tuple[str, ...] = TEMPLATES,
    leave_out: tuple[str, ...] = (),
) -> Installed:
    """Renders `templates` and applies them, but for the kinds in `leave_out`."""
    documents = [
        d
        for d in render(release, namespace, directory, templates, **(values or {}))
        if d["kind"] not in leave_out
    ]
    manifest = "\n---\n".join(json.dumps(doc) for doc in documents)
    plane.kubectl("apply", "--server-side", "-f", "-", input=manifest)
    return Installed(plane, namespace, documents)


def uninstall(installed: Installed) -> None:
    """The cluster-scoped objects (the namespaced ones go with their namespaces)."""
    for doc in installed.documents:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            installed.plane.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], check=False)
