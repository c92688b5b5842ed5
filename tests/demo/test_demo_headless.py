"""`make demo`'s scenario without its screen: the chart installed with `helm install` (the operator as pods
on the local node, the bundled Redis without persistence), examples/seed/ applied, and the summary's
checks asserted: every campaign Completed with its counts, the seed's 2/2/1 seen, all five sending at
once. The relay is the test's recording sink rather than Mailpit (whose cold build would cost CI a
minute and a half); the pool's YAML is the example's with only the relay's port changed.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.demo import scenario
from tests.harness.demo.observe import Observer, bundled_redis_url
from tests.harness.demo.runner import Run
from tests.harness.local_node import LocalNode
from tests.harness.smtp_sink import RecordingSink

TIMEOUT = 150.0  # the operator starting (about 15 s) and 1,200 messages at 40 per second


@pytest.fixture
def demo_cluster(
    controlplane: ControlPlane, local_node: LocalNode, tmp_path: Path
) -> Iterator[tuple[scenario.Cluster, str, str]]:
    """The chart installed as the demo installs it, in namespaces of this test; everything deleted after:
    the campaigns while the operator still runs (their finalizers are its), then the release."""
    suffix = uuid.uuid4().hex[:6]
    namespace, release_namespace = f"demo-{suffix}", f"demo-system-{suffix}"
    kube = scenario.Cluster(controlplane.kubeconfig, tmp_path / "helm")
    scenario.install_chart(kube, namespace, release_namespace)
    try:
        yield kube, namespace, release_namespace
    finally:
        kube.kubectl("delete", "mailcampaigns", "--all", "-n", namespace, "--timeout=60s")
        kube.helm("uninstall", scenario.RELEASE, "-n", release_namespace, "--timeout", "2m")
        kube.kubectl("delete", "namespace", namespace, release_namespace, "--wait=false")


def test_the_demo_scenario_completes_with_the_seeds_split_and_all_five_at_once(
    controlplane: ControlPlane,
    demo_cluster: tuple[scenario.Cluster, str, str],
    make_recording_sink: Callable[..., RecordingSink],
) -> None:
    kube, namespace, release_namespace = demo_cluster
    sink = make_recording_sink(record_raw=True)
    plan = scenario.load("parallel", relay=(net.LOOPBACK, sink.port))
    api = controlplane.api
    observer = Observer(
        api,
        namespace,
        scenario.POOL,
        lambda: bundled_redis_url(api, release_namespace, scenario.RELEASE),
        lambda: len(sink.messages()),
    )
    run = Run(api, kube, namespace, plan, "parallel", observer)
    run.wait_for_kinds()
    started = time.monotonic()
    run.apply()
    summary = run.watch(TIMEOUT)
    print(
        f"\nFIGURE apply to all done {time.monotonic() - started:.1f} s; first message "
        f"{summary.first_delivery} s; split {summary.seed_split}; all five for {summary.overlap} s"
    )

    assert summary.problems() == []  # the summary's checks: Completed, counts, 2/2/1, all at once
    assert sorted(c.name for c in summary.campaigns) == sorted(plan.names)
    totals = {c["metadata"]["name"]: c["data"]["recipients.csv"].count("\n") - 1 for c in plan.recipients}
    assert {c.name: c.total for c in summary.campaigns} == {
        name.removesuffix("-recipients"): n for name, n in totals.items()
    }
    # What the summary counted is what the relay got: each recipient once, personalised, unsubscribable.
    messages = sink.messages()
    assert len(messages) == sum(c.sent for c in summary.campaigns)
    assert max(Counter(tuple(m.rcpt_tos) for m in messages).values()) == 1
    parsed = messages[-1].message
    assert str(parsed["List-Unsubscribe"]).startswith("<https://acme.example/unsubscribe/")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = parsed.get_content()
    assert (
        "{{" not in str(parsed["Subject"])
        and "{{" not in body
        and str(parsed["To"]).split(" <")[0].strip('"') in body
    )
