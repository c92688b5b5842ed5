"""The judge's model of an unwritten outcome across Redis outages that follow each other closely."""

from __future__ import annotations

import math

from tests.soak.invariants import chained_outages


def test_outages_closer_than_the_gap_are_one_and_others_stay_apart() -> None:
    # Seen in a soak: a restart (down 1.48 s), up 0.15 s, a crash (down 2.2 s), a SIGKILL during it.
    outages = [[25.8, 28.0], [24.165, 25.65], [40.0, math.inf]]
    assert chained_outages(outages, gap=0.35) == [(24.165, 28.0), (40.0, math.inf)]
    assert chained_outages(outages, gap=0.1) == [(24.165, 25.65), (25.8, 28.0), (40.0, math.inf)]


def test_an_outage_inside_another_does_not_shorten_it() -> None:
    assert chained_outages([[1.0, 5.0], [2.0, 3.0]], gap=0.35) == [(1.0, 5.0)]
