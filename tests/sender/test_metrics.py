"""The sender's metrics that alerts read are there from the start, at 0."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mailtrain_sender.metrics import SMTP_ERROR_KINDS, Metrics


def _value(registry: CollectorRegistry, kind: str) -> float | None:
    return registry.get_sample_value("mailtrain_sender_smtp_errors_total", {"pool": "ns/p", "kind": kind})


def test_every_kind_of_smtp_error_is_a_series_at_zero_before_the_first_error() -> None:
    metrics = Metrics("ns/p")
    assert {kind: _value(metrics.registry, kind) for kind in SMTP_ERROR_KINDS} == {
        "transient": 0.0,
        "permanent": 0.0,
        "connection": 0.0,
    }
    metrics.smtp_errors.labels("ns/p", "connection").inc()
    assert _value(metrics.registry, "connection") == 1.0
    assert _value(metrics.registry, "transient") == 0.0
