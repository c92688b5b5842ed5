"""Running a sender: config reload, probes, metrics, logs, and a 100,000-recipient campaign."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from mailtrain_sender.publisher import Publisher
from tests.harness.binaries import REPO_ROOT
from tests.harness.redis_server import RedisServer
from tests.harness.senders import SenderFleet, SenderProcess, merge
from tests.harness.smtp_sink import PostfixSink, RecordingSink
from tests.sender.conftest import POOL, campaign_wire, recipients, wait_progress, wait_until, work_snapshot


async def test_reload_changes_limits_and_throttle_without_a_restart(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher, redis_client: Redis
) -> None:
    sender = fleet.start(
        1, queue={"maxParallelCampaigns": 1}, smtp={"throttling": {"messagesPerSecond": 50}}
    )[0]
    pid = sender.process.pid if sender.process else None
    a = await publisher.publish(campaign_wire("reload-a"), recipients("reload-a", 3000))
    b = await publisher.publish(campaign_wire("reload-b"), recipients("reload-b", 3000))
    smtp_sink.wait_for(20, timeout=30)
    snap = await work_snapshot(redis_client, [a.id, b.id])
    assert len(snap.assigned["sender-0"]) == 1  # one at a time, as configured

    sender.write_config(
        merge(
            sender.settings,
            {"queue": {"maxParallelCampaigns": 0}, "smtp": {"throttling": {"messagesPerSecond": 400}}},
        )
    )

    async def both_running() -> bool:
        snap = await work_snapshot(redis_client, [a.id, b.id])
        return len(snap.assigned.get("sender-0", ())) == 2

    await wait_until(both_running, "both campaigns on the process after the reload")
    before = len(smtp_sink.messages())
    await wait_until(lambda: len(smtp_sink.messages()) >= before + 300, "300 more messages", timeout=5)
    # 300 messages within 5 s is beyond the old limit of 50/s: the new throttle is in force.
    assert sender.metric("mailtrain_sender_config_reloads_total", result="applied") == 1
    assert sender.process is not None and sender.process.pid == pid and sender.process.poll() is None

    sender.config_path.write_text("[queue]\nprocesses = 0\n")  # a broken edit is refused, not applied
    await wait_until(
        lambda: sender.metric("mailtrain_sender_config_reloads_total", result="rejected") == 1, "rejection"
    )
    assert sender.ready()
    assert "new configuration rejected, keeping the running one: " in sender.log_text()
    assert "queue.processes" in sender.log_text()


def _check(process: SenderProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailtrain_sender", "--config", str(process.config_path), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "sender_image")},
    )


async def test_probes_metrics_and_check_command(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    sender = fleet.start(1)[0]
    wire = await publisher.publish(campaign_wire("observed"), recipients("observed", 50))
    await wait_progress(publisher, wire.id, timeout=30)
    assert sender._get("/healthz")[0] == 200
    assert sender._get("/readyz")[0] == 200
    assert sender.metric("mailtrain_sender_recipients_total", campaign="test/observed", outcome="sent") == 50
    assert sender.metric("mailtrain_sender_smtp_send_seconds_count", pool=POOL) == 50
    assert sender.metric("mailtrain_sender_campaign_claims_total") == 1
    text = sender.metrics()
    for name in (
        "mailtrain_sender_smtp_connections",
        "mailtrain_sender_throttle_wait_seconds_total",
        "mailtrain_sender_lease_expiries_total",
        "mailtrain_sender_lease_takeovers_total",
        "mailtrain_sender_redis_errors_total",
        "mailtrain_sender_campaigns_claimed",
    ):
        assert name in text, name

    healthy = _check(sender)
    assert healthy.returncode == 0, healthy.stderr
    assert "healthy: sender-0" in healthy.stdout
    sender.kill()
    await wait_until(lambda: _check(sender).returncode == 1, "--check fails once the heartbeat is stale", 15)


async def test_json_logs_name_the_campaign(fleet: SenderFleet, publisher: Publisher) -> None:
    sender = fleet.start(1, worker={"logFormat": "json"})[0]
    wire = await publisher.publish(
        campaign_wire("logged", headers={"Sender": "someone@acme.example"}), recipients("logged", 3)
    )
    await wait_progress(publisher, wire.id, state="failed", timeout=30)
    entries = [json.loads(line) for line in sender.log_text().splitlines()]
    failures = [e for e in entries if "campaign failed" in e["message"]]
    assert failures and all(e["campaign"] == "test/logged" for e in failures)
    assert all(e["level"] == "error" for e in failures)
    assert all({"time", "level", "logger", "message", "worker"} <= set(e) for e in entries)


async def test_a_100k_recipient_campaign_completes(
    make_fleet: Callable[[str, int], SenderFleet],
    make_postfix_sink: Callable[..., PostfixSink],
    redis_url: str,
    publisher: Publisher,
) -> None:
    sink = make_postfix_sink()
    fleet = make_fleet(redis_url, sink.port)
    fleet.start(
        2,
        queue={"processes": 2},
        smtp={"maxConnections": 10, "maxMessages": 1000},
        worker={"queueSize": 2000},
    )
    wire = await publisher.publish(
        campaign_wire("hundred-k", chunk_size=512), recipients("hundred-k", 100_000)
    )
    progress = await wait_progress(publisher, wire.id, timeout=400)
    assert (progress.total, progress.sent, progress.failed, progress.invalid) == (100_000, 100_000, 0, 0)
    assert progress.completed_chunks == [(0, wire.chunks - 1)]
    await wait_until(lambda: sink.messages_received() == 100_000, "smtp-sink counted every message", 10)


async def test_without_shared_redis_one_process_runs_on_its_private_redis(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    # redis.enabled = false: the pool's single process talks to its own Redis (a sidecar in its pod,
    # here the test's redis-server) through the very same code path.
    fleet.start(1, redis={"enabled": False}, queue={"processes": 1})
    wire = await publisher.publish(campaign_wire("private"), recipients("private", 40))
    assert (await wait_progress(publisher, wire.id, timeout=30)).sent == 40
    assert len(smtp_sink.messages()) == 40


async def test_finding_5_a_redis_that_evicts_keys_is_refused_with_one_line(
    fleet: SenderFleet, redis_client: Redis
) -> None:
    await redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        sender = SenderProcess(fleet.root, "sender-evicting", fleet.settings())
        sender.root.mkdir(parents=True, exist_ok=True)
        sender.write_config()
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "mailtrain_sender", "--config", str(sender.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "sender_image")},
        )
    finally:
        await redis_client.config_set("maxmemory-policy", "noeviction")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mailtrain-sender: Redis evicts keys (maxmemory-policy allkeys-lru)")
    assert "noeviction" in last and "Traceback" not in result.stderr


async def test_finding_18_redis_down_is_one_warning_and_one_line_when_it_is_back(
    tmp_path: Path, smtp_sink: RecordingSink, make_fleet: Callable[[str, int], SenderFleet]
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        sender = make_fleet(server.url, smtp_sink.port).start(1)[0]
        server.stop()
        await wait_until(
            lambda: sender.metric("mailtrain_sender_redis_errors_total") >= 10, "ten failed calls", timeout=60
        )
        server.start()
        await wait_until(lambda: sender.ready(), "ready again", timeout=30)
        log = sender.log_text()
        assert log.count("Redis unavailable") == 1, log
        assert log.count("Redis available again") == 1
    finally:
        server.stop()


async def test_finding_18_a_change_that_needs_a_restart_says_so(fleet: SenderFleet) -> None:
    sender = fleet.start(1)[0]
    sender.write_config(merge(sender.settings, {"worker": {"logLevel": "debug"}}))
    await wait_until(lambda: "take effect at the next restart" in sender.log_text(), "the warning")
    assert "worker.logLevel" in sender.log_text()
