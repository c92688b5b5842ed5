"""Real components for tests and local runs: control plane, Redis, SMTP sinks.

Nothing here is a fake. Every helper starts a real server as a local process on a
free loopback port, and fails with the reason when its binary is missing.
"""
