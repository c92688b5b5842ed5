"""Runs the scenario's campaigns to the end and judges them: shared by `make demo` (which draws each
snapshot) and the headless test (which asserts the summary's checks). The chart is installed and the
relay is up before this starts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.harness.demo import scenario
from tests.harness.demo.model import Snapshot, Summary, Timeline, summarize
from tests.harness.demo.observe import Observer
from tests.harness.kubeapi import KubeApi, KubeApiError

GROUP = "/apis/mailtrain.dev/v1alpha1"
FINAL = ("Completed", "Failed")
POLL = 0.25  # seconds between snapshots: the 2/2/1 lasts seconds, the view redraws as often


@dataclass
class Run:
    api: KubeApi
    cluster: scenario.Cluster
    namespace: str
    plan: scenario.Scenario
    mode: str
    observer: Observer
    applied_at: float = 0.0  # time.monotonic() when the campaigns were applied

    def wait_for_kinds(self, timeout: float = 60) -> None:
        """Both kinds are served: right after `helm install` put the CRDs there, their storage
        answers 429 for a moment."""
        deadline = time.monotonic() + timeout
        for kind in ("senderpools", "mailcampaigns"):
            while True:
                try:
                    self.api.list(f"{GROUP}/namespaces/{self.namespace}/{kind}")
                    break
                except KubeApiError as error:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{kind} not served within {timeout:.0f} s: {error}") from error
                time.sleep(POLL)

    def reset(self) -> None:
        """A rerun on a cluster that is up: the last run's campaigns go first (their finalizers remove
        their Redis keys), so that the pool starts from nothing."""
        base = f"{GROUP}/namespaces/{self.namespace}/mailcampaigns"
        if not self.api.list(base):
            return
        self.cluster.kubectl("delete", "mailcampaigns", "--all", "-n", self.namespace, "--wait=false")
        deadline = time.monotonic() + 60
        while self.api.list(base):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the last run's campaigns in {self.namespace} were not deleted in 60 s")
            time.sleep(POLL)

    def apply(self) -> None:
        scenario.apply(self.cluster, self.namespace, [self.plan.pool, *self.plan.recipients])
        scenario.apply(self.cluster, self.namespace, self.plan.campaigns)
        self.applied_at = time.monotonic()

    def watch(
        self, timeout: float, on_snapshot: Callable[[Timeline, Snapshot], None] | None = None
    ) -> Summary:
        """Snapshots until every campaign is Completed or Failed (or the timeout), then the summary."""
        timeline = Timeline()
        deadline = time.monotonic() + timeout
        try:
            while True:
                snap = self.observer.snapshot(time.monotonic() - self.applied_at)
                timeline.add(snap)
                if on_snapshot is not None:
                    on_snapshot(timeline, snap)
                if self._finished(snap) or time.monotonic() > deadline:
                    break
                time.sleep(POLL)
        finally:
            self.observer.close()
        return summarize(timeline, self.mode)

    def _finished(self, snap: Snapshot) -> bool:
        names = {c.name for c in snap.campaigns}
        return names >= set(self.plan.names) and all(c.phase in FINAL for c in snap.campaigns)
