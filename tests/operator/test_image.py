"""The operator image definition, checked as text as the sender's is (tests/sender/test_image.py).

Also: the package split it relies on, and the folder layout that keeps `operator` the standard
library's module.
"""

from __future__ import annotations

import importlib
import operator
import re
import subprocess
import sys
import tomllib

import pytest

from mailtrain_operator.settings import OperatorSettings
from tests.harness.binaries import REPO_ROOT
from tests.operator import dockerfiles

DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_entrypoint_is_the_console_script() -> None:
    assert dockerfiles.entrypoint(DOCKERFILE) == ["mailtrain-operator"]
    target = PYPROJECT["project"]["scripts"]["mailtrain-operator"]
    assert target == "mailtrain_operator.cli:main"
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_runs_as_a_numeric_non_root_user() -> None:
    assert dockerfiles.numeric_user(DOCKERFILE) != 0


def test_no_build_tools_in_the_final_stage() -> None:
    stage = "\n".join(dockerfiles.final_stage(DOCKERFILE))
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|uv sync|pip install|apt-get)\b", stage)
    assert "COPY --from=build /opt/venv /opt/venv" in stage


def test_it_exposes_the_default_ports_of_its_settings() -> None:
    exposed = {
        int(port)
        for line in dockerfiles.final_stage(DOCKERFILE)
        if line.startswith("EXPOSE ")
        for port in line.split()[1:]
    }
    defaults = OperatorSettings.model_fields
    listens = {str(defaults[name].default) for name in ("health_listen", "metrics_listen")}
    assert exposed == {int(listen.rpartition(":")[2]) for listen in listens}


@pytest.mark.parametrize("command", dockerfiles.uv_sync_commands(DOCKERFILE), ids=["dependencies", "project"])
def test_its_install_commands_bring_kopf_and_the_sender_layout(command: list[str]) -> None:
    packages = dockerfiles.locked_packages(dockerfiles.selecting_flags(command))
    assert {"kopf", "kubernetes", "redis", "pydantic-settings"} <= packages
    assert not {"pytest", "mypy", "ruff", "aiosmtpd"} & packages  # no development tools


def test_the_dockerfile_uses_the_uv_that_wrote_the_lock() -> None:
    assert f"ghcr.io/astral-sh/uv:{dockerfiles.uv_version_pinned()} " in DOCKERFILE.read_text()


def test_the_development_venv_has_both_programs() -> None:
    """`make venv` (uv sync with the default groups) installs what every test needs."""
    packages = dockerfiles.locked_packages([])
    assert {"kopf", "kubernetes", "aiosmtplib", "pytest"} <= packages


def test_the_operator_folder_is_not_a_package_and_shadows_nothing() -> None:
    assert not (REPO_ROOT / "operator" / "__init__.py").exists()
    assert hasattr(operator, "itemgetter")  # this process imported the stdlib's module
    # A fresh interpreter started in the repository root, as a developer would: still the stdlib's.
    probe = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.itemgetter)"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "itemgetter" in probe.stdout
