"""The sender image definition: its entrypoint, a non-root user, no build tools at run time.

There is no container engine here to build it, so the Dockerfile is checked as
text, and the entrypoint it names is checked to exist in the package.
"""

from __future__ import annotations

import json
import re
import tomllib

from tests.harness.binaries import REPO_ROOT

DOCKERFILE = REPO_ROOT / "sender_image" / "Dockerfile"


def _final_stage() -> list[str]:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def test_entrypoint_is_the_console_script() -> None:
    stage = _final_stage()
    entrypoint = next(line for line in stage if line.startswith("ENTRYPOINT"))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT").strip()) == ["mailtrain-sender"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mailtrain-sender"] == "mailtrain_sender.cli:main"


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [line.split()[1] for line in _final_stage() if line.startswith("USER ")]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_no_build_tools_in_the_final_stage() -> None:
    stage = "\n".join(_final_stage())
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|uv sync|pip install|apt-get)\b", stage)
    assert "COPY --from=build /opt/venv /opt/venv" in stage
