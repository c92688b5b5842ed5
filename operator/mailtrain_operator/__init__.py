"""mailtrain-operator: the kopf operator that reconciles SenderPools and MailCampaigns.

It lives under `operator/mailtrain_operator/` rather than `operator/` so that it
never shadows the standard library's `operator` module.
"""
