"""The engine's three promises under the findings of issue 6, with real sender processes.

  * the campaigns a process holds send at the same time;
  * no recipient is ever lost;
  * a recipient is sent twice only if it was in flight at a crash.

Each test names its finding. Most run against `ScriptedRelay`, which can be slow,
rude or wrong on cue, and judge by what the relay received.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from mailtrain_sender.layout import CampaignKeys, CampaignWire
from mailtrain_sender.publisher import Publisher
from tests.harness.senders import SenderFleet
from tests.harness.smtp_sink import RecordingSink
from tests.sender.conftest import campaign_wire, message_origin, recipients, wait_progress, wait_until
from tests.sender.scripted_relay import ACCEPT, Reply, Script, ScriptedRelay

SLOW = Reply(delay=3.0)  # a final reply that comes after the lease TTL below
SLOWER = Reply(delay=5.0)


def _duplicates(relay: ScriptedRelay) -> dict[str, int]:
    counts = Counter(a.message_id for a in relay.accepted)
    return {m: n for m, n in counts.items() if n > 1}


async def test_finding_0_campaigns_of_one_process_take_turns_whatever_the_backlog(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    fleet.start(1, smtp={"maxConnections": 4, "throttling": {"messagesPerSecond": 300}})
    backlog = await publisher.publish(campaign_wire("backlog", chunk_size=512), recipients("backlog", 4000))
    await wait_until(lambda: len(smtp_sink.messages()) >= 300, "the first campaign in full flow")
    published = time.time()
    newcomer = await publisher.publish(
        campaign_wire("newcomer", chunk_size=512), recipients("newcomer", 1200)
    )
    await wait_progress(publisher, newcomer.id, timeout=60)

    by_campaign: dict[str, list[float]] = defaultdict(list)
    for message in smtp_sink.messages():
        by_campaign[message_origin(message)[0]].append(message.received_at)
    first, last = min(by_campaign[newcomer.id]), max(by_campaign[newcomer.id])
    assert first - published < 2.0, f"the new campaign's first message came {first - published:.1f}s later"
    shares = []
    for start in range(int(first) + 1, int(last)):  # every whole second while both had work
        window = [c for c, times in by_campaign.items() for t in times if start <= t < start + 1]
        shares.append(round(Counter(window)[newcomer.id] / len(window), 2))
    assert len(shares) >= 3 and all(0.35 <= s <= 0.65 for s in shares), shares
    assert (await publisher.progress(backlog.id)).state == "active"  # it was still sending all along


async def test_finding_1_a_campaign_moved_away_mid_transaction_is_not_sent_twice(
    make_fleet: Callable[[str, int], SenderFleet], redis_url: str, publisher: Publisher
) -> None:
    async with ScriptedRelay(Script(final=lambda _: SLOWER)) as relay:  # every reply long after the TTL
        wires = [
            await publisher.publish(campaign_wire(f"moving{i}", chunk_size=8), recipients(f"moving{i}", 8))
            for i in range(2)
        ]
        fleet = make_fleet(redis_url, relay.port)
        settings: dict[str, Any] = {"queue": {"processes": 2}, "worker": {"leaseTtl": 2}}
        fleet.start(1, **settings)  # both campaigns at once: their messages take turns

        def both_in_flight() -> bool:
            return {a.split(".")[0] for a in relay.awaiting_final} == {"moving0", "moving1"}

        await wait_until(both_in_flight, "transactions of both campaigns in flight", timeout=60)
        fleet.start(1, **settings)  # the rebalance moves one campaign away while they are
        for wire in wires:
            await wait_progress(publisher, wire.id, timeout=90)
        assert len({a.message_id for a in relay.accepted}) == 16
        assert _duplicates(relay) == {}
        assert {a.helo for a in relay.accepted} == {"sender-0", "sender-1"}  # it really moved


@pytest.mark.parametrize("max_messages", [100, 1], ids=["long-connections", "quit-after-each"])
async def test_finding_1_sigterm_while_the_relay_is_slow_sends_nothing_twice(
    make_fleet: Callable[[str, int], SenderFleet], redis_url: str, publisher: Publisher, max_messages: int
) -> None:
    # With maxMessages 1 every transaction ends in a QUIT, which the shutdown cuts off: the outcome
    # the relay already gave must be recorded before that wait (found by review).
    async with ScriptedRelay(Script(final=lambda _: SLOW, quit_delay=2.0)) as relay:
        fleet = make_fleet(redis_url, relay.port)
        settings: dict[str, Any] = {
            "queue": {"processes": 2},
            "smtp": {"maxMessages": max_messages},
            "worker": {"leaseTtl": 2, "shutdownGrace": 10},
        }
        senders = fleet.start(2, **settings)
        wire = await publisher.publish(campaign_wire("draining", chunk_size=8), recipients("draining", 24))
        await wait_until(lambda: senders[0].metric("mailtrain_sender_smtp_connections") > 0, "sending")
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(senders[0].terminate, 30) == 0  # in flight 3 s > lease TTL 2 s
        done = await wait_progress(publisher, wire.id, timeout=120)
        assert len({a.message_id for a in relay.accepted}) == 24
        assert _duplicates(relay) == {}
        assert done.ambiguous == 0


async def test_finding_3_a_reply_that_is_not_utf8_is_kept_readable_and_acks_go_on(
    make_fleet: Callable[[str, int], SenderFleet], redis_url: str, publisher: Publisher
) -> None:
    rude = Reply(b"550 5.1.1 Unbekannter Empf\xe4nger \xff\xfe")

    def rcpt(address: str) -> Reply:
        return rude if address.startswith("umlaut.") else ACCEPT

    async with ScriptedRelay(Script(rcpt=rcpt)) as relay:
        make_fleet(redis_url, relay.port).start(1)
        wire = await publisher.publish(campaign_wire("umlaut", chunk_size=8), recipients("umlaut", 5))
        others = await publisher.publish(campaign_wire("after", chunk_size=8), recipients("after", 40))
        done = await wait_progress(publisher, wire.id, timeout=30)
        assert (done.failed, done.sent) == (5, 0)
        replies = await publisher.failures(wire.id)
        assert all(r.startswith("550 5.1.1 Unbekannter Empf?nger") and r.isascii() for r in replies.values())
        assert (await wait_progress(publisher, others.id, timeout=30)).sent == 40  # acknowledgements go on


async def test_findings_9_10_a_campaign_level_error_fails_the_campaign_once_and_frees_its_slot(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    sender = fleet.start(1, queue={"maxParallelCampaigns": 1})[0]
    broken = [
        campaign_wire("comma", **{"from": {"address": "a,b@x.example"}}),  # type: ignore[arg-type]
        campaign_wire("reserved", headers={"Sender": "someone@acme.example"}),
        campaign_wire("template", subject="{{ unclosed"),
    ]
    for wire in broken:
        await publisher.publish(wire, recipients(wire.name.split("/")[1], 30))
    healthy = await publisher.publish(campaign_wire("healthy"), recipients("healthy", 20))
    for wire in broken:
        progress = await wait_progress(publisher, wire.id, state="failed", timeout=30)
        assert progress.reason and (progress.sent, progress.failed, progress.pending) == (0, 0, 30)
    assert (await wait_progress(publisher, healthy.id, timeout=30)).sent == 20  # one slot, and it was freed
    log = sender.log_text()
    assert log.count("campaign failed") == 3 and "Traceback" not in log


async def test_finding_14_a_recipient_waiting_for_a_retry_holds_up_nobody(
    make_fleet: Callable[[str, int], SenderFleet], redis_url: str, publisher: Publisher
) -> None:
    tried: set[str] = set()

    def greylist(address: str) -> Reply:  # every 200th recipient: "come back later", once
        index = int(address.split(".")[1].split("@")[0])
        if index % 200 == 0 and address not in tried:
            tried.add(address)
            return Reply(b"451 4.7.1 Greylisted, try again later")
        return ACCEPT

    async with ScriptedRelay(Script(rcpt=greylist)) as relay:
        make_fleet(redis_url, relay.port).start(1, smtp={"retry": {"backoff": 8}})
        wire = await publisher.publish(campaign_wire("grey", chunk_size=64), recipients("grey", 2048))
        done = await wait_progress(publisher, wire.id, timeout=60)
        assert done.sent == 2048 and len(tried) == 11
        grey = [a.received_at for a in relay.accepted if a.recipient in tried]
        others = [a.received_at for a in relay.accepted if a.recipient not in tried]
        assert max(others) < min(grey)  # everyone else was done before the first retry was due


async def test_finding_15_refused_recipients_do_not_cost_a_connection_each(
    make_fleet: Callable[[str, int], SenderFleet], redis_url: str, publisher: Publisher
) -> None:
    for pipelining in (True, False):

        def bounce(address: str) -> Reply:
            return Reply(b"550 5.1.1 no such user") if address.startswith("bounce.") else ACCEPT

        async with ScriptedRelay(Script(rcpt=bounce, pipelining=pipelining)) as relay:
            fleet = make_fleet(redis_url, relay.port)
            fleet.start(1, smtp={"maxConnections": 2, "maxMessages": 1000})
            good = recipients("fine", 150)
            bad = recipients("bounce", 50)
            mixed = [r for pair in zip(good[:50], bad, strict=True) for r in pair] + good[50:]
            wire = await publisher.publish(campaign_wire(f"bounces-{pipelining}", chunk_size=64), mixed)
            done = await wait_progress(publisher, wire.id, timeout=30)
            assert (done.sent, done.failed) == (150, 50)
            assert relay.connections <= 2, (pipelining, relay.connections)
            fleet.stop_all()


async def test_finding_15_a_refusal_followed_by_a_hang_up_is_a_refusal(
    make_fleet: Callable[[str, int], SenderFleet], redis_url: str, publisher: Publisher
) -> None:
    def rcpt(address: str) -> Reply:
        if address.startswith("gone."):
            return Reply(b"550 5.1.1 mailbox unavailable", then_hang_up=True)
        return ACCEPT

    async with ScriptedRelay(Script(rcpt=rcpt)) as relay:
        make_fleet(redis_url, relay.port).start(1, smtp={"retry": {"maxAttempts": 5, "backoff": 0.1}})
        wire = await publisher.publish(campaign_wire("gone", chunk_size=8), recipients("gone", 6))
        done = await wait_progress(publisher, wire.id, timeout=30)
        assert done.failed == 6 and len(relay.accepted) == 0
        replies = await publisher.failures(wire.id)
        assert all(r.startswith("550 5.1.1 mailbox unavailable") for r in replies.values()), replies
        assert relay.connections == 6  # one attempt each: no retry of what was refused


async def test_finding_16_a_relay_out_of_step_costs_a_reconnect_not_a_wrong_outcome(
    make_fleet: Callable[[str, int], SenderFleet], redis_url: str, publisher: Publisher
) -> None:
    def final(address: str) -> Reply:  # an extra reply nobody asked for, after some messages
        return Reply(extra=b"250 2.0.0 surprise") if address.startswith("chatty.1") else ACCEPT

    def rcpt(address: str) -> Reply:
        return Reply(b"550 5.1.1 refused") if address.endswith("7@example.org") else ACCEPT

    async with ScriptedRelay(Script(rcpt=rcpt, final=final)) as relay:
        make_fleet(redis_url, relay.port).start(1, smtp={"maxConnections": 1})
        wire = await publisher.publish(campaign_wire("chatty", chunk_size=8), recipients("chatty", 40))
        done = await wait_progress(publisher, wire.id, timeout=30)
        refused = sum(1 for i in range(40) if i % 10 == 7)
        assert (done.sent, done.failed) == (40 - refused, refused)  # no reply was taken for another's
        assert relay.connections > 1 and _duplicates(relay) == {}


async def test_a_long_reply_without_an_end_is_cut_off(
    make_fleet: Callable[[str, int], SenderFleet], redis_url: str, publisher: Publisher
) -> None:
    endless = Reply(b"250-" + b"x" * 100_000)  # a reply far beyond any limit, accepted by the relay
    seen: set[str] = set()

    def final(address: str) -> Reply:
        if address == "endless.3@example.org" and address not in seen:
            seen.add(address)
            return endless
        return ACCEPT

    async with ScriptedRelay(Script(final=final)) as relay:
        sender = make_fleet(redis_url, relay.port).start(1, smtp={"retry": {"backoff": 0.1}})[0]
        wire: CampaignWire = await publisher.publish(
            campaign_wire("endless", chunk_size=8), recipients("endless", 8)
        )
        done = await wait_progress(publisher, wire.id, timeout=30)
        assert done.sent == 8
        assert sender.metric("mailtrain_sender_smtp_ambiguous_total") == 1  # accepted, then no answer


async def test_finding_12_rows_of_the_wrong_shape_are_invalid_recipients_not_retries(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher, redis_client: Redis
) -> None:
    sender = fleet.start(1, smtp={"maxConnections": 1})[0]
    wire = campaign_wire("shapes", chunk_size=16)
    # Published paused, so the chunk can be rewritten before any sender sees it.
    published = await publisher.publish(wire, recipients("shapes", 16))
    assert await publisher.pause(published)
    bad_rows = [
        [5],  # the address is not a string
        ["n@example.org", 7],  # nor is the name
        ["v@example.org", "V", [1, 2]],  # vars is not a mapping
        ["s@example.org", "\ud800 lone surrogate"],  # cannot be encoded
        ["z@example.org", "Nul\u0000"],  # a control character in a header
        "not a row",
        [],
    ]
    good_rows = [[f"ok.{i}@example.org", f"OK {i}"] for i in range(16 - len(bad_rows))]
    payload = json.dumps(bad_rows + good_rows)
    await cast("Awaitable[int]", redis_client.hset(CampaignKeys(wire.id).rcpt, "0", payload))
    assert await publisher.resume(published)
    done = await wait_progress(publisher, wire.id, timeout=30)
    assert (done.sent, done.invalid, done.failed) == (len(good_rows), len(bad_rows), 0)
    reasons = await publisher.failures(wire.id)
    assert set(reasons) == set(range(len(bad_rows))) and all(reasons.values())
    assert "internal error" not in sender.log_text()
    assert len({m.peer_port for m in smtp_sink.messages()}) == 1  # no connection was dropped for them


async def test_finding_11_a_template_that_never_ends_fails_its_campaign_and_blocks_nothing(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    sender = fleet.start(1)[0]
    endless = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}Hi"
    bad = await publisher.publish(campaign_wire("endless-loop", subject=endless), recipients("endless", 20))
    good = await publisher.publish(campaign_wire("meanwhile", chunk_size=8), recipients("meanwhile", 200))
    slowest = 0.0
    while (await publisher.progress(bad.id)).state == "active":
        started = time.monotonic()
        assert await asyncio.to_thread(sender.ready)  # the event loop answers while a render spins
        slowest = max(slowest, time.monotonic() - started)
        await asyncio.sleep(0.1)
    failed = await publisher.progress(bad.id)
    # Stopped by the step budget (render.py) or, failing that, the watchdog (renderer.py).
    assert failed.state == "failed" and ("steps" in failed.reason or "longer than" in failed.reason), failed
    assert (failed.failed, failed.pending) == (0, 20)  # the campaign's error: no recipient was spent on it
    assert (await wait_progress(publisher, good.id, timeout=60)).sent == 200
    assert slowest < 1.5, slowest
    assert sender.metric("mailtrain_sender_lease_expiries_total") == 0
