"""SenderPool and MailCampaign (mailtrain.dev/v1alpha1) as pydantic models: the operator's typed view.

Where it sits: handlers parse `spec` and `status` with these models and write status by dumping
them (`to_status`); pure builders take and return them. The CRDs in crds/ are the API the
apiserver enforces; these models mirror them field by field (names, types, required fields,
enums, defaults, bounds and descriptions), and tests/operator/test_api_models.py holds the two
equal. The CEL rules (what the sender refuses) stay in the CRDs: an object the operator reads has
passed them. Nothing here imports kopf, kubernetes or redis.

    base.py         ApiModel, Condition, to_status, the group and version
    senderpool.py   SenderPool: spec and status
    mailcampaign.py MailCampaign: spec, status, and the checkpoint's chunk ranges

Python names are snake_case; the API's camelCase names are the aliases, so parse with
`Model.model_validate(body)` and write with `to_status(model)`.
"""

from mailtrain_operator.api.base import (
    API_VERSION,
    GROUP,
    POOL_NAME_MAX_LENGTH,
    VERSION,
    ApiModel,
    Condition,
    to_status,
)
from mailtrain_operator.api.mailcampaign import (
    Checkpoint,
    InlineRecipient,
    KeyRef,
    ListFormat,
    ListUnsubscribe,
    MailCampaign,
    MailCampaignSpec,
    MailCampaignStatus,
    Phase,
    Recipients,
    RecipientSource,
    Sender,
    UrlSource,
    format_ranges,
    parse_ranges,
)
from mailtrain_operator.api.senderpool import (
    QueueSpec,
    RedisSpec,
    SecretKeyRef,
    SecretRef,
    SenderPodTemplate,
    SenderPool,
    SenderPoolSpec,
    SenderPoolStatus,
    SmtpSpec,
    ThrottlingSpec,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "POOL_NAME_MAX_LENGTH",
    "VERSION",
    "ApiModel",
    "Checkpoint",
    "Condition",
    "InlineRecipient",
    "KeyRef",
    "ListFormat",
    "ListUnsubscribe",
    "MailCampaign",
    "MailCampaignSpec",
    "MailCampaignStatus",
    "Phase",
    "QueueSpec",
    "RecipientSource",
    "Recipients",
    "RedisSpec",
    "SecretKeyRef",
    "SecretRef",
    "Sender",
    "SenderPodTemplate",
    "SenderPool",
    "SenderPoolSpec",
    "SenderPoolStatus",
    "SmtpSpec",
    "ThrottlingSpec",
    "UrlSource",
    "format_ranges",
    "parse_ranges",
    "to_status",
]
