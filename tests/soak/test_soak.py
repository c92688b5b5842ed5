"""The short soak profile (about 2 minutes, 3 sender processes) as part of `make test`.

Each run draws a fresh seed, so `make test` keeps exploring; a failure prints the seed and the
command that replays it (`SOAK_SEED=<seed> make pytest PYTEST_ARGS=tests/soak` does the same here).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tests.soak.options import SoakOptions
from tests.soak.run_soak import run_soak_sync


@pytest.mark.timeout(600)  # 90 s of faults, then quiescence (its own deadline) and the checks
def test_short_soak_holds_every_invariant(tmp_path: Path) -> None:
    seed = int(os.environ.get("SOAK_SEED") or secrets.randbelow(2**31))
    report = run_soak_sync(SoakOptions(seed=seed, duration=90, processes=3, workdir=tmp_path))
    assert report.passed, f"{report.summary()}\n{report.to_json(brief=True)}"
