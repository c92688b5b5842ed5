"""Prometheus metrics of the operator, served on /metrics (settings.metrics_listen).

Where it sits: domain modules and handlers record into the one `METRICS` object; the startup
handler serves its registry with `serve` (every replica serves it, the standby too). Names follow
Prometheus conventions (`_total` counters, base units) and start with `mailtrain_operator_`, so
that alert rules can tell them from the sender's `mailtrain_sender_` series. Reconcile errors are
counted by `framework.counts_reconcile_errors`, which every handler wears. The chart's alert rules
(`templates/prometheusrule.yaml`) read these names. The per-pool and per-campaign gauges come from
daemons, which run on the active replica only.
"""

from __future__ import annotations

import contextlib

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PHASES = ("Pending", "Scheduled", "Sending", "Paused", "Completed", "Failed")
KINDS = ("SenderPool", "MailCampaign")
RECIPIENT_OUTCOMES = ("published", "invalid", "duplicate")
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.campaigns = Gauge(
            "mailtrain_operator_campaigns",
            "MailCampaigns this operator handles, by namespace and phase.",
            ["namespace", "phase"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "mailtrain_operator_reconcile_errors",
            "Reconciles that ended in an error (retried), by kind.",
            ["kind"],
            registry=r,
        )
        self.recipients_loaded = Counter(
            "mailtrain_operator_recipients_loaded",
            "Recipients read from campaign sources, by outcome: published, invalid, duplicate.",
            ["outcome"],
            registry=r,
        )
        self.publish_seconds = Histogram(
            "mailtrain_operator_publish_seconds",
            "Time to publish one campaign to Redis, recipients loading included.",
            registry=r,
            buckets=_DURATION_BUCKETS,
        )
        self.harvest_seconds = Histogram(
            "mailtrain_operator_harvest_seconds",
            "Time of one progress read of a campaign from Redis.",
            registry=r,
            buckets=_DURATION_BUCKETS,
        )
        self.redis_errors = Counter(
            "mailtrain_operator_redis_errors",
            "Redis calls that failed (connection, timeout, or a reply error), by operation.",
            ["operation"],
            registry=r,
        )
        # One series per pool and per Sending campaign, labelled as the senders label theirs
        # (`<namespace>/<name>`, the names in Redis): alerts can join the two, and no label clashes
        # with the `namespace` a scrape adds. A pool's series go when its status loop ends, a
        # campaign's when it leaves Sending, so the count follows what exists, not what existed.
        self.pool_desired_processes = Gauge(
            "mailtrain_operator_pool_desired_processes",
            "Sender processes each SenderPool should run (the replicas the operator gives its Deployment).",
            ["pool"],
            registry=r,
        )
        self.pool_ready_processes = Gauge(
            "mailtrain_operator_pool_ready_processes",
            "Sender processes of each SenderPool that are ready (its Deployment's readyReplicas).",
            ["pool"],
            registry=r,
        )
        self.campaign_last_progress = Gauge(
            "mailtrain_operator_campaign_last_progress_timestamp_seconds",
            "Unix time when each Sending campaign last made progress (its count of recipients done "
            "changed), or began Sending, or was first seen by this operator process.",
            ["campaign"],
            registry=r,
        )
        # Present at 0 from the start, so rate() and absent() work at once.
        for kind in KINDS:
            self.reconcile_errors.labels(kind)
        for outcome in RECIPIENT_OUTCOMES:
            self.recipients_loaded.labels(outcome)

    def pool_processes(self, pool: str, *, desired: int, ready: int) -> None:
        self.pool_desired_processes.labels(pool).set(desired)
        self.pool_ready_processes.labels(pool).set(ready)

    def forget_pool(self, pool: str) -> None:
        for gauge in (self.pool_desired_processes, self.pool_ready_processes):
            with contextlib.suppress(KeyError):
                gauge.remove(pool)


METRICS = OperatorMetrics()


async def serve(registry: CollectorRegistry, listen: str) -> web.AppRunner:
    """/metrics on HOST:PORT, on the running event loop; `await runner.cleanup()` stops it.

    On the loop rather than prometheus_client's thread: it stops when kopf's cleanup runs on SIGTERM,
    and an address already in use is an OSError here, at start, not a log line from another thread.
    """

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, int(port)).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
