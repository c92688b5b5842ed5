"""SenderPool: how many sender processes run, with which Redis and which SMTP relay."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mailtrain_operator.api.base import API_VERSION, ApiModel, Condition


class QueueSpec(ApiModel):
    processes: int = Field(
        default=1,
        ge=0,
        le=200,
        description="Number of sender processes (the Deployment's replicas); `kubectl scale` sets it. "
        "0 stops sending.",
    )
    max_parallel_campaigns: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Campaigns one process works on at once. 0 = unlimited (its fair share); 1 = one at a "
        "time.",
    )


class SecretKeyRef(ApiModel):
    name: str = Field(
        min_length=1, max_length=253, description="Name of the Secret, in the pool's namespace."
    )
    key: str = Field(min_length=1, max_length=253, description="The key whose value is the URL.")


class RedisSpec(ApiModel):
    enabled: bool = Field(
        default=True,
        description="true: a shared Redis (url, urlSecretRef, or the chart's bundled one). false: a single "
        "sender with a private Redis sidecar, without persistence.",
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        description="redis://host:port/db, or rediss:// for TLS. No password here: a URL with one belongs in "
        "a Secret (urlSecretRef).",
    )
    url_secret_ref: SecretKeyRef | None = Field(
        default=None, description="A Secret key whose value is the Redis URL, password included."
    )


class SecretRef(ApiModel):
    name: str = Field(
        min_length=1, max_length=253, description="Name of the Secret, in the pool's namespace."
    )


class ThrottlingSpec(ApiModel):
    messages_per_second: float | None = Field(
        default=None,
        ge=0,
        description="Limit for the whole pool, all processes together. 0 or absent = unlimited.",
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Messages that may go out at once above the rate after an idle spell. Default a tenth of "
        "a "
        "second's worth, at least 1.",
    )


class SmtpSpec(ApiModel):
    host: str = Field(
        min_length=1,
        max_length=253,
        description="The relay's host name or IP address, e.g. smtp.example.com.",
    )
    port: int = Field(
        default=587,
        ge=1,
        le=65535,
        description="The relay's port; 587 for submission with STARTTLS, 465 for TLS, 25 between servers.",
    )
    security: Literal["none", "starttls", "tls"] = Field(
        default="starttls",
        description="none: plain SMTP. starttls: upgrade with STARTTLS (refused if the relay does not offer "
        "it). tls: TLS from the start.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description="A Secret with the keys `username` and `password`, given to the sender pods as "
        "environment "
        "variables; the operator never reads it.",
    )
    max_connections: int = Field(
        default=5, ge=1, le=1000, description="Concurrent SMTP connections per process."
    )
    max_messages: int = Field(
        default=100, ge=1, le=1_000_000, description="Messages per connection before it is reconnected."
    )
    throttling: ThrottlingSpec | None = Field(
        default=None, description="The pool-wide rate limit, kept in Redis and shared by every process."
    )


class SenderPodTemplate(ApiModel):
    image: str | None = Field(
        default=None,
        max_length=1024,
        description="The sender image; default the one released with the operator.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Always, IfNotPresent or Never, as for any container."
    )
    resources: dict[str, Any] | None = Field(
        default=None,
        description="The sender container's resource requests and limits (a ResourceRequirements).",
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the pods must be scheduled on."
    )
    tolerations: list[dict[str, Any]] | None = Field(
        default=None, description="Tolerations of the pods, as in a pod spec."
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="Affinity of the pods, as in a pod spec."
    )
    pod_labels: dict[str, str] | None = Field(
        default=None, description="Extra labels of the pods (the operator's own selector labels win)."
    )
    pod_annotations: dict[str, str] | None = Field(default=None, description="Extra annotations of the pods.")


class SenderPoolSpec(ApiModel):
    queue: QueueSpec = Field(
        default_factory=QueueSpec,
        description="How many sender processes run, and how many campaigns each works on at once.",
    )
    redis: RedisSpec = Field(
        default_factory=RedisSpec, description="The Redis the processes coordinate through."
    )
    smtp: SmtpSpec = Field(description="The SMTP relay every process sends through.")
    template: SenderPodTemplate | None = Field(default=None, description="Settings for the sender pods.")


class SenderPoolStatus(ApiModel):
    replicas: int | None = Field(
        default=None,
        ge=0,
        description="Sender pods that exist (the Deployment's replicas); the scale subresource reads it.",
    )
    ready_replicas: int | None = Field(default=None, ge=0, description="Sender pods that are ready.")
    active_campaigns: int | None = Field(
        default=None, ge=0, description="Campaigns of this pool that are sending now."
    )
    selector: str | None = Field(
        default=None,
        description="The label selector of the sender pods, as text (for the scale subresource and "
        "autoscalers).",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation this status describes."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready (True when every process is ready), Degraded (True when the pool cannot run as "
        "specified; the reason says why).",
    )


class SenderPool(ApiModel):
    api_version: Literal["mailtrain.dev/v1alpha1"] = API_VERSION
    kind: Literal["SenderPool"] = "SenderPool"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: SenderPoolSpec
    status: SenderPoolStatus | None = Field(default=None, description="Written by the operator only.")
