"""SMTP behaviour with real processes: faults, the relay going away, the global throttle, TLS and AUTH."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mailtrain_sender.layout import Recipient
from mailtrain_sender.publisher import Publisher
from tests.harness.pki import CertificateAuthority
from tests.harness.senders import SenderFleet
from tests.harness.smtp_sink import Fault, RecordingSink
from tests.sender.conftest import campaign_wire, message_origin, recipients, wait_progress, wait_until

FAST_RETRY = {"retry": {"maxAttempts": 3, "backoff": 0.1, "maxBackoff": 0.5}}


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-command-at-a-time"])
async def test_transient_and_permanent_failures_are_retried_or_counted(
    make_fleet: Callable[[str, int], SenderFleet],
    make_recording_sink: Callable[..., RecordingSink],
    redis_url: str,
    publisher: Publisher,
    pipelining: bool,
) -> None:
    sink = make_recording_sink(
        pipelining=pipelining,
        faults=[
            Fault(stage="rcpt", code=451, match=r"^flaky\.", times=2),  # accepted at the third attempt
            Fault(stage="rcpt", code=550, match=r"^gone\."),  # never
            Fault(stage="rcpt", code=452, match=r"^full\."),  # transient forever: out of attempts
            Fault(stage="data", drop=True, match=r"^drop\.", times=1),  # connection dropped once
        ],
    )
    fleet = make_fleet(redis_url, sink.port)
    fleet.start(1, smtp=FAST_RETRY)
    people = [
        Recipient(f"{kind}.{i}@example.org")
        for kind in ("ok", "flaky", "gone", "full", "drop")
        for i in range(4)
    ]
    people += [Recipient("not-an-address"), Recipient("nodot@localhost")]
    wire = await publisher.publish(campaign_wire("faults"), people)
    progress = await wait_progress(publisher, wire.id, timeout=60)
    assert (progress.sent, progress.failed, progress.invalid) == (12, 8, 2)
    arrived = sink.recipient_counts()
    assert set(arrived) == {f"{k}.{i}@example.org" for k in ("ok", "flaky", "drop") for i in range(4)}
    assert max(arrived.values()) == 1
    replies = await publisher.failures(wire.id)
    assert all(replies[i].startswith("550") for i in range(8, 12))  # gone: the relay's reply is kept
    assert all("452" in replies[i] and "after 3 attempts" in replies[i] for i in range(12, 16))


async def test_relay_away_for_a_while_defers_and_loses_nobody(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    sender = fleet.start(1, smtp={**FAST_RETRY, "throttling": {"messagesPerSecond": 300}})[0]
    wire = await publisher.publish(campaign_wire("away"), recipients("away", 900))
    smtp_sink.wait_for(200, timeout=30)
    smtp_sink.stop()
    await wait_until(
        lambda: sender.metric("mailtrain_sender_recipients_total", outcome="deferred") > 0, "deferrals"
    )
    smtp_sink.start()  # same port: the relay is back
    progress = await wait_progress(publisher, wire.id, timeout=60)
    assert (progress.sent, progress.failed) == (900, 0)
    assert progress.deferred > 0
    assert set(Counter(message_origin(m)[1] for m in smtp_sink.messages())) == set(range(900))


async def test_throttle_holds_for_the_whole_pool_across_processes(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    limit, count = 100, 800
    burst = limit // 10
    fleet.start(3, queue={"processes": 3}, smtp={"throttling": {"messagesPerSecond": limit}})
    wire = await publisher.publish(campaign_wire("throttled", chunk_size=32), recipients("throttled", count))
    await wait_progress(publisher, wire.id, timeout=60)
    times = sorted(m.received_at for m in smtp_sink.messages())
    assert len(times) == count
    assert len({m.helo for m in smtp_sink.messages()}) == 3  # all three processes took part
    rate = (count - burst) / (times[-1] - times[0])
    assert abs(rate - limit) <= 0.05 * limit, rate
    most_in_a_second = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    assert most_in_a_second <= limit + burst
    round_trips = sum(p.metric("mailtrain_sender_throttle_requests_total") for p in fleet.processes)
    assert round_trips < count / 2, round_trips  # tokens come in batches, not one round trip per message


@pytest.fixture
def relay_tls(tmp_path: Path) -> tuple[tuple[Path, Path], Path]:
    """A serving certificate for the relay on 127.0.0.1, and the CA file a sender trusts it with."""
    ca = CertificateAuthority()
    pair = ca.serving().write(tmp_path, "relay")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    return pair, tmp_path / "ca.pem"


async def test_starttls_and_auth_with_secrets_from_the_environment(
    tmp_path: Path,
    make_fleet: Callable[[str, int], SenderFleet],
    make_recording_sink: Callable[..., RecordingSink],
    redis_url: str,
    publisher: Publisher,
    relay_tls: tuple[tuple[Path, Path], Path],
) -> None:
    tls, ca_file = relay_tls
    sink = make_recording_sink(auth=("mailer", "s3cret-pw"), tls=tls)
    fleet = make_fleet(redis_url, sink.port)
    (tmp_path / "password").write_text("s3cret-pw\n")
    env = {"MAILTRAIN_SMTP_USERNAME": "mailer", "MAILTRAIN_SMTP_PASSWORD_FILE": str(tmp_path / "password")}
    sender = fleet.start(1, env=env, smtp={"security": "starttls", "caFile": str(ca_file)})[0]
    wire = await publisher.publish(campaign_wire("secure"), recipients("secure", 20))
    await wait_progress(publisher, wire.id, timeout=30)
    assert len(sink.messages()) == 20
    assert "s3cret-pw" not in sender.log_text()


async def test_implicit_tls_and_a_wrong_password_defers_without_leaking_it(
    make_fleet: Callable[[str, int], SenderFleet],
    make_recording_sink: Callable[..., RecordingSink],
    redis_url: str,
    publisher: Publisher,
    relay_tls: tuple[tuple[Path, Path], Path],
) -> None:
    tls, ca_file = relay_tls
    sink = make_recording_sink(auth=("mailer", "right"), tls=tls, implicit_tls=True)
    fleet = make_fleet(redis_url, sink.port)
    env = {"MAILTRAIN_SMTP_USERNAME": "mailer", "MAILTRAIN_SMTP_PASSWORD": "wrong-pw-123"}
    sender = fleet.start(1, env=env, smtp={"security": "tls", "caFile": str(ca_file)})[0]
    wire = await publisher.publish(campaign_wire("denied"), recipients("denied", 5))
    await wait_until(
        lambda: sender.metric("mailtrain_sender_recipients_total", outcome="deferred") > 0, "defer"
    )
    progress = await publisher.progress(wire.id)
    assert (progress.sent, progress.failed, progress.pending) == (0, 0, 5)  # deferred, not failed
    assert "wrong-pw-123" not in sender.log_text()
    assert "authentication" in sender.log_text().lower()
    fleet.stop_all()
    assert sink.messages() == []
