"""mailtrain-sender: the command the sender image runs.

    mailtrain-sender --config /etc/mailtrain/sender.toml     run the worker
    mailtrain-sender --config ... --check                    exec probe: exit 0 if this pod's worker is alive
    mailtrain-sender --config ... --validate                 check the file and exit
    mailtrain-sender --config ... --listen 10.0.0.7:9090     serve /metrics, /healthz, /readyz there

SIGTERM stops it gracefully; SIGUSR1 logs where each of its tasks waits.

Exit codes: 0 done (or healthy), 1 unhealthy or failed, 2 bad configuration (this file, or a
Redis that evicts keys).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from mailtrain_sender import logs
from mailtrain_sender.config import ConfigError, Secrets, SenderConfig, load_config, with_listen
from mailtrain_sender.endpoints import serve
from mailtrain_sender.layout import Store
from mailtrain_sender.reload import watch_config
from mailtrain_sender.worker import FatalError, Worker, redis_client

log = logging.getLogger("mailtrain_sender")
DEFAULT_CONFIG = "/etc/mailtrain/sender.toml"
EXIT_BAD_CONFIG = 2


def _dump_tasks() -> None:
    """SIGUSR1: log where every task of the process is waiting (for a process that seems stuck)."""
    for task in asyncio.all_tasks():
        stack = io.StringIO()
        task.print_stack(limit=8, file=stack)
        log.warning("task %s:\n%s", task.get_name(), stack.getvalue().rstrip())


async def _run(path: Path, config: SenderConfig, secrets: Secrets, listen: str | None) -> int:
    worker = Worker(config, secrets)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    http = await serve(worker, config.worker.listen)

    def apply(new: SenderConfig) -> None:  # a reloaded file keeps the --listen of this process
        worker.apply_config(with_listen(new, listen) if listen else new)

    watcher = asyncio.create_task(watch_config(path, apply, worker.metrics))
    try:
        await worker.run()
    finally:
        watcher.cancel()
        await http.cleanup()
    return 0


def _check(config: SenderConfig, secrets: Secrets) -> int:
    """Alive = this pod's worker wrote its heartbeat to Redis within one lease TTL."""
    try:
        health = json.loads(Path(config.worker.health_file).read_text())
    except (OSError, ValueError):
        print("unhealthy: no health file yet", file=sys.stderr)
        return 1
    return asyncio.run(_check_redis(config, secrets, health))


async def _check_redis(config: SenderConfig, secrets: Secrets, health: dict[str, Any]) -> int:
    age = time.time() - float(health.get("time", 0))
    if age > config.worker.lease_ttl:
        print(f"unhealthy: last heartbeat {age:.0f}s ago", file=sys.stderr)
        return 1
    client = redis_client(config, secrets)
    try:
        beat = await Store(client).get_heartbeat(config.worker.pool, str(health["worker"]))
    except RedisError as exc:
        print(f"unhealthy: Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    if beat is None:
        print("unhealthy: heartbeat missing in Redis", file=sys.stderr)
        return 1
    print(f"healthy: {health['worker']} works on {len(beat.get('campaigns', []))} campaign(s)")
    return 0


def _event_loop(choice: str) -> None:
    if choice == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mailtrain-sender", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, type=Path, help=f"default: {DEFAULT_CONFIG}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exec probe: is this pod's worker alive?")
    mode.add_argument("--validate", action="store_true", help="validate the configuration and exit")
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="overrides worker.listen: a pod passes its own address ($(POD_IP):9090), which a shared "
        "sender.toml cannot",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.listen:
            config = with_listen(config, args.listen)
        secrets = Secrets()
    except ConfigError as exc:
        print(f"mailtrain-sender: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    if args.validate:
        print(f"{args.config}: ok")
        sys.exit(0)
    _event_loop(config.worker.event_loop)
    if args.check:
        sys.exit(_check(config, secrets))
    logs.setup(config.worker.log_format, config.worker.log_level, config.worker_id)
    try:
        sys.exit(asyncio.run(_run(args.config, config, secrets, args.listen)))
    except FatalError as exc:
        log.error("%s", exc)
        print(f"mailtrain-sender: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
