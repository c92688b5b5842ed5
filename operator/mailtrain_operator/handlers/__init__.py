"""Every kopf handler of the operator, and nothing else: each body hands its work to a domain module.

Importing this package registers them all on kopf's default registry (`framework.run` does it).
One module per kind, so that the handlers of a kind read together:

- `startup.py`: kopf's settings, made once before any watch starts;
- `pool.py`: SenderPool → Deployment, ConfigMap, Service, and the pool's status;
- `campaign.py`: MailCampaign → Redis (publish, pause, resume, delete) and progress → status.
"""

from mailtrain_operator.handlers import campaign, pool, startup

__all__ = ["campaign", "pool", "startup"]
