"""Prometheus metrics of the operator, served on /metrics (settings.metrics_listen).

Where it sits: domain modules and handlers record into the one `METRICS` object; the startup
handler serves its registry. Names follow Prometheus conventions (`_total` counters, base
units) and start with `mailtrain_operator_`, so that alert rules can tell them from the
sender's `mailtrain_sender_` series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PHASES = ("Pending", "Scheduled", "Sending", "Paused", "Completed", "Failed")
KINDS = ("SenderPool", "MailCampaign")
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
        for kind in KINDS:  # present at 0 from the start, so rate() and absent() work at once
            self.reconcile_errors.labels(kind)


METRICS = OperatorMetrics()
