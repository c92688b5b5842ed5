"""Prometheus metrics of one sender process, served on /metrics.

Names follow Prometheus conventions (`_total` counters, base units). Every
series carries the pool; per-campaign series are removed when the process stops
working on the campaign, so finished campaigns do not pile up.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("sent", "failed", "invalid", "deferred")
SMTP_ERROR_KINDS = ("transient", "permanent", "connection")


class Metrics:
    def __init__(self, pool: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.pool = pool
        r = self.registry
        self.recipients = Counter(
            "mailtrain_sender_recipients",
            "Recipients by outcome: sent, failed, invalid, deferred (retried later).",
            ["pool", "campaign", "outcome"],
            registry=r,
        )
        self.send_seconds = Histogram(
            "mailtrain_sender_smtp_send_seconds",
            "Time of one SMTP transaction (MAIL to the reply after DATA).",
            ["pool"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ).labels(pool)
        self.connections = Gauge(
            "mailtrain_sender_smtp_connections", "Open SMTP connections.", ["pool"], registry=r
        ).labels(pool)
        self.smtp_errors = Counter(
            "mailtrain_sender_smtp_errors",
            "SMTP failures by kind: transient, permanent, connection.",
            ["pool", "kind"],
            registry=r,
        )
        # At 0 from the start: a series that appeared with the first error would hide that error from
        # rate() and increase(), which need two samples (MailtrainRelayUnreachable reads this one).
        for kind in SMTP_ERROR_KINDS:
            self.smtp_errors.labels(pool, kind)
        self.throttle_wait = Counter(
            "mailtrain_sender_throttle_wait_seconds",
            "Seconds connections spent waiting for pool-wide tokens.",
            ["pool"],
            registry=r,
        ).labels(pool)
        self.throttle_requests = Counter(
            "mailtrain_sender_throttle_requests",
            "Round trips to the pool-wide token bucket (each buys a batch of tokens).",
            ["pool"],
            registry=r,
        ).labels(pool)
        self.campaigns = Gauge(
            "mailtrain_sender_campaigns_claimed", "Campaigns this process works on now.", ["pool"], registry=r
        ).labels(pool)
        self.campaign_claims = Counter(
            "mailtrain_sender_campaign_claims",
            "Times this process started working on a campaign.",
            ["pool"],
            registry=r,
        ).labels(pool)
        self.lease_expiries = Counter(
            "mailtrain_sender_lease_expiries",
            "Chunk leases this process lost because they expired.",
            ["pool"],
            registry=r,
        ).labels(pool)
        self.takeovers = Counter(
            "mailtrain_sender_lease_takeovers",
            "Chunks taken over from another process whose lease had expired.",
            ["pool"],
            registry=r,
        ).labels(pool)
        self.worker_expiries = Counter(
            "mailtrain_sender_worker_expiries",
            "Processes of the pool found dead (heartbeat expired) by this one.",
            ["pool"],
            registry=r,
        ).labels(pool)
        self.redis_errors = Counter(
            "mailtrain_sender_redis_errors",
            "Redis calls that failed, by operation.",
            ["pool", "operation"],
            registry=r,
        )
        self.config_reloads = Counter(
            "mailtrain_sender_config_reloads",
            "Reloads of sender.toml by result: applied, rejected.",
            ["pool", "result"],
            registry=r,
        )
        self.ambiguous = Counter(
            "mailtrain_sender_smtp_ambiguous",
            "Transactions whose final dot went out but whose reply never came (timeout, dropped "
            "connection, shutdown): the relay may have accepted them, so they may be delivered twice.",
            ["pool"],
            registry=r,
        ).labels(pool)
        self.loop_restarts = Counter(
            "mailtrain_sender_loop_restarts",
            "Background loops restarted after an unexpected error (see the log for the traceback).",
            ["pool", "loop"],
            registry=r,
        )
        self.campaign_failures = Counter(
            "mailtrain_sender_campaign_failures",
            "Campaigns this process failed for a campaign-level error (the reason is in Redis and the log).",
            ["pool"],
            registry=r,
        ).labels(pool)
        self.live_workers = Gauge(
            "mailtrain_sender_pool_workers",
            "Live processes in the pool, as this one last saw them.",
            ["pool"],
            registry=r,
        ).labels(pool)

    def redis_error(self, operation: str) -> None:
        self.redis_errors.labels(self.pool, operation).inc()

    def outcome(self, campaign: str, outcome: str) -> Counter:
        return self.recipients.labels(self.pool, campaign, outcome)

    def forget_campaign(self, campaign: str) -> None:
        for outcome in OUTCOMES:
            with contextlib.suppress(KeyError):
                self.recipients.remove(self.pool, campaign, outcome)
