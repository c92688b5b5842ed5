"""mailtrain-sender: the Redis-coordinated SMTP worker that runs in the sender pods.

It holds no Kubernetes credentials; everything it needs comes from sender.toml,
environment variables, mounted files and Redis.
"""
