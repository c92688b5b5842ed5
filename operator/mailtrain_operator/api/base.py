"""What both kinds share: the model base, conditions (metav1.Condition), and writing a status."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP, VERSION = "mailtrain.dev", "v1alpha1"
API_VERSION: Final = "mailtrain.dev/v1alpha1"
# A SenderPool's name is at most this long, so that `<pool>-sender`-style Service names stay DNS labels.
POOL_NAME_MAX_LENGTH = 50


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def to_status(status: ApiModel) -> dict[str, Any]:
    """The status as the API spells it, for a patch: camelCase, RFC 3339 times, unset fields left out."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(ApiModel):
    """A condition as the Kubernetes API conventions define it (metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="The condition's name in CamelCase, e.g. Ready or Complete.",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation the condition was set from."
    )
    last_transition_time: datetime = Field(description="When status last changed.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Why, in CamelCase, for programs.",
    )
    message: str = Field(max_length=32768, description="Why, for people, and what to do about it.")
