"""How often the operator writes a campaign's status, counted by the apiserver itself
(apiserver_request_total on its /metrics): at most once per progress interval (5 s by default)
while sending, plus one write per transition; nothing for idle or finished campaigns."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

from tests.operator.campaign_rig import CampaignRig, inline, rig  # noqa: F401 - the fixture

VERBS = ("PATCH", "UPDATE", "APPLY")
INTERVAL = 5.0  # settings.progress_interval's default, which this test leaves alone


def status_writes(rig: CampaignRig) -> float:  # noqa: F811
    return rig.apiserver_requests("mailcampaigns", "status", VERBS)


def test_status_writes_are_few_while_sending_and_none_when_idle_or_finished(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.senders("default", 2, smtp={"throttling": {"messagesPerSecond": 12}})
    rig.operator(chunk_size=16)
    before = status_writes(rig)
    rig.create_campaign("measured", recipients={"inline": inline(160)})
    sending = rig.wait_phase("measured", "Sending")
    started = time.monotonic()
    rig.wait_phase("measured", "Completed", timeout=120)
    elapsed = time.monotonic() - started
    finished = status_writes(rig)
    writes = finished - before
    # The Sending write, then progress at most once per interval, then the Completed write (it is a
    # transition, so it does not wait for the interval).
    bound = 1 + math.ceil(elapsed / INTERVAL) + 1
    print(f"sending for {elapsed:.1f} s: {writes:.0f} status writes (bound {bound}); first status {sending}")
    assert 3 <= writes <= bound

    # Idle and finished: a paused campaign, a scheduled one, and the completed one write nothing.
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rig.create_campaign("resting", suspend=True, recipients={"inline": inline(5)})
    rig.create_campaign("tomorrow", startAt=later, recipients={"inline": inline(5)})
    rig.wait_phase("resting", "Paused")
    rig.wait_phase("tomorrow", "Scheduled")
    settled = status_writes(rig)
    assert settled - finished == 2  # one each, for their first phase
    time.sleep(3 * INTERVAL)  # an absence of writes can only be watched for: three progress intervals
    assert status_writes(rig) == settled
