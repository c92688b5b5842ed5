"""The live view on a narrow terminal: the bars give way, the names and figures stay whole."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tests.harness.demo import view
from tests.harness.demo.model import CampaignState, PodState, Snapshot, Timeline, view_model

NAMES = ("product-news", "spring-sale", "release-notes", "survey", "webinar")
PODS = tuple(PodState(f"seed-sender-5d5bf9c88d-{suffix}", True) for suffix in ("6vl56", "fknbx", "pn26w"))


def _drawn(width: int) -> list[str]:
    uids = [f"u{i}" for i in range(5)]
    split = {
        PODS[0].name: frozenset(uids[:2]),
        PODS[1].name: frozenset(uids[2:4]),
        PODS[2].name: frozenset(uids[4:]),
    }
    timeline = Timeline()
    for at, sent in ((0.0, 0), (1.0, 20), (2.0, 40)):
        campaigns = tuple(CampaignState(NAMES[i], uids[i], "Sending", 240, sent, 0, 0) for i in range(5))
        timeline.add(Snapshot(at, campaigns, PODS, split, throttle=40))
    console = Console(width=width, color_system=None, force_terminal=False, record=True, file=io.StringIO())
    console.print(view.live(view_model(timeline), "parallel"))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [60, 80, 120])
def test_every_campaign_row_keeps_its_name_figures_and_some_bar(width: int) -> None:
    lines = _drawn(width)
    assert all(len(line) <= width for line in lines)
    for name in NAMES:
        [row] = [line for line in lines if line.startswith(f"│ {name} ")]
        assert "Sending" in row and "40/240" in row and "20.0/s" in row and "━" in row, row
        assert "…" not in row, row
    assert any("100.0/s of 40/s throttle" in line for line in lines)
