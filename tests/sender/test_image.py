"""The sender image definition: its entrypoint, a non-root user, no build tools at run time, and no
Kubernetes client among the packages it installs.

There is no container engine here to build it, so the Dockerfile is checked as
text, the entrypoint it names is checked to exist in the package, and its `uv sync`
flags are resolved against uv.lock (tests/operator/dockerfiles.py).
"""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.harness.binaries import REPO_ROOT
from tests.operator import dockerfiles

DOCKERFILE = REPO_ROOT / "sender_image" / "Dockerfile"
# The sender holds no Kubernetes credentials, so it has no client to use them with either.
KUBERNETES_CLIENTS = {"kopf", "kubernetes", "kubernetes-asyncio", "pykube-ng"}


def test_entrypoint_is_the_console_script() -> None:
    assert dockerfiles.entrypoint(DOCKERFILE) == ["mailtrain-sender"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mailtrain-sender"] == "mailtrain_sender.cli:main"


def test_runs_as_a_numeric_non_root_user() -> None:
    assert dockerfiles.numeric_user(DOCKERFILE) != 0


def test_no_build_tools_in_the_final_stage() -> None:
    stage = "\n".join(dockerfiles.final_stage(DOCKERFILE))
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|uv sync|pip install|apt-get)\b", stage)
    assert "COPY --from=build /opt/venv /opt/venv" in stage


@pytest.mark.parametrize("command", dockerfiles.uv_sync_commands(DOCKERFILE), ids=["dependencies", "project"])
def test_its_install_commands_cannot_pull_a_kubernetes_client(command: list[str]) -> None:
    packages = dockerfiles.locked_packages(dockerfiles.selecting_flags(command))
    assert {"redis", "aiosmtplib", "jinja2", "pydantic"} <= packages  # what the sender runs on
    assert not packages & KUBERNETES_CLIENTS


def test_the_dockerfile_uses_the_uv_that_wrote_the_lock() -> None:
    assert f"ghcr.io/astral-sh/uv:{dockerfiles.uv_version_pinned()} " in DOCKERFILE.read_text()
