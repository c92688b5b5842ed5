"""A pool's sender.toml, built and judged by the sender's own config model, with no I/O.

`render` writes the file from the spec and parses it back with `mailtrain_sender.config.parse_config`,
exactly as a sender pod will. A spec the sender would refuse therefore never reaches a pod: it is a
`PoolSpecRejected` with the sender's one-line message, which the operator shows as a condition and
an Event instead of applying anything.

What goes in the file:
- `[redis]`: `url` from `redis.url`; none for `redis.urlSecretRef` (the pods get the whole URL, password
  included, as MAILTRAIN_REDIS_URL from the Secret); the private Redis's socket for `enabled: false`.
- `[queue] maxParallelCampaigns`, and the `[smtp]` relay, limits and throttle.
- `[worker] pool`: `<namespace>/<pool>`, the pool's name in Redis.

`queue.processes` is judged but left out of the file: the sender only checks it, the Deployment's
replicas are what count, and writing it would make every `kubectl scale` rewrite the file (each
sender would then log that the change needs a restart) and refuse 0, which stops a pool.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from mailtrain_operator.api.senderpool import SenderPoolSpec
from mailtrain_operator.pools.names import PRIVATE_REDIS_URL, redis_pool_name
from mailtrain_sender.config import ConfigError, SenderConfig, parse_config, restart_settings

# Condition reasons of a spec the operator does not apply.
SENDER_CONFIG_REJECTED = "SenderConfigRejected"
REDIS_NOT_CONFIGURED = "RedisNotConfigured"

Tree = dict[str, Any]


class PoolSpecRejected(Exception):
    """The spec cannot run: `reason` (CamelCase) and a one-line `message` that says what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class SenderToml:
    text: str  # the file, as the ConfigMap holds it
    config: SenderConfig  # the same file, as the sender loads it

    @property
    def restart_hash(self) -> str:
        """A digest of what a running sender cannot reload: equal digests, no restart needed."""
        canonical = json.dumps(restart_settings(self.config), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def settings_tree(namespace: str, name: str, spec: SenderPoolSpec) -> Tree:
    """The sender.toml settings of a pool, as nested tables (camelCase, the file's own names)."""
    redis = spec.redis
    redis_table: Tree = {"enabled": redis.enabled}
    if not redis.enabled:
        redis_table["url"] = PRIVATE_REDIS_URL
    elif redis.url is not None:
        redis_table["url"] = redis.url
    elif redis.url_secret_ref is None:
        raise PoolSpecRejected(
            REDIS_NOT_CONFIGURED,
            "the pool names no Redis: set redis.url or redis.urlSecretRef, or redis.enabled: false "
            "for a single process with a private Redis",
        )
    smtp = spec.smtp
    smtp_table: Tree = {
        "host": smtp.host,
        "port": smtp.port,
        "security": smtp.security,
        "maxConnections": smtp.max_connections,
        "maxMessages": smtp.max_messages,
    }
    if smtp.throttling is not None:
        throttling = {
            "messagesPerSecond": smtp.throttling.messages_per_second,
            "burst": smtp.throttling.burst,
        }
        smtp_table["throttling"] = {key: value for key, value in throttling.items() if value is not None}
    return {
        "redis": redis_table,
        "queue": {"maxParallelCampaigns": spec.queue.max_parallel_campaigns},
        "smtp": smtp_table,
        "worker": {"pool": redis_pool_name(namespace, name)},
    }


def render(namespace: str, name: str, spec: SenderPoolSpec) -> SenderToml:
    """The pool's sender.toml, or PoolSpecRejected with the sender's own message."""
    tree = settings_tree(namespace, name, spec)
    header = [
        f"sender.toml of SenderPool {namespace}/{name}, written by mailtrain-operator.",
        "Edit the SenderPool: this file is overwritten.",
    ]
    ref = spec.redis.url_secret_ref
    if spec.redis.enabled and ref is not None:
        header.append(f"redis.url: MAILTRAIN_REDIS_URL, from key {ref.key!r} of Secret {ref.name!r}.")
    text = toml_text(tree, header)
    judged = tree | {"queue": tree["queue"] | {"processes": spec.queue.processes}}
    try:
        if spec.queue.processes > 0:  # the sender's own rules about the number of processes
            parse_config(toml_text(judged), "sender.toml")
        config = parse_config(text, "sender.toml")
    except ConfigError as exc:
        raise PoolSpecRejected(SENDER_CONFIG_REJECTED, str(exc)) from None
    return SenderToml(text, config)


def toml_text(tree: Tree, comments: list[str] | None = None) -> str:
    """TOML for nested tables of strings, numbers and booleans (all sender.toml holds)."""
    lines = [f"# {comment}" for comment in comments or ()]
    _table(tree, [], lines)
    return "\n".join(lines) + "\n"


def _table(tree: Tree, path: list[str], lines: list[str]) -> None:
    scalars = [(key, value) for key, value in tree.items() if not isinstance(value, dict)]
    if path and scalars:
        lines.append(f"[{'.'.join(path)}]")
    lines.extend(f"{key} = {_value(value)}" for key, value in scalars)
    for key, value in tree.items():
        if isinstance(value, dict):
            _table(value, [*path, key], lines)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"no TOML for {type(value).__name__}")


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped, the rest as it is."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
