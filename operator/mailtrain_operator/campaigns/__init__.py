"""MailCampaign → Redis, and Redis → status: the domain code behind handlers/campaign.py.

    wire.py         spec → CampaignWire (id = uid), checked as the sender checks it; content edits
    sources.py      the recipient source: THE place where the recipients loader plugs in
    publish.py      publish and republish through the sender's Publisher, hashing the recipients
    status.py       pure: the status from why a campaign waits, or from its Progress; Events
    lifecycle.py    CampaignDriver: one campaign's steps (publish, steer, harvest, write status)
    steering.py     suspend and priority from the spec onto Redis; an active campaign kept registered
    deletion.py     removing a campaign's Redis keys (the finalizer)
    runtime.py      what the drivers share: Redis clients, wake-ups, locks, the phase census, the
                    progress clock
    redis_clients.py, objects.py   one Redis client per target; the status patch

Nothing here imports kopf: handlers pass in the live body, the pool index, and how to post an
Event. Nothing here spells a Redis key: everything goes through `mailtrain_sender.publisher`.
"""
