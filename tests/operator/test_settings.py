"""The operator's settings: defaults, parsing, and one clear line with exit code 2 for a bad value.

The bad values go through a real `python -m mailtrain_operator`, as a pod would start it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mailtrain_operator.settings import ENV_PREFIX, OperatorSettings, load_settings, variable
from tests.harness.binaries import REPO_ROOT


@pytest.fixture(autouse=True)
def _no_settings_from_the_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def _operator(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return subprocess.run(
        [sys.executable, "-m", "mailtrain_operator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env, "PYTHONPATH": str(REPO_ROOT / "operator")},
    )


def test_defaults() -> None:
    settings = load_settings()
    assert settings.clusterwide and settings.namespaces == ()
    assert (settings.log_level, settings.log_format) == ("info", "text")
    assert (settings.health_listen, settings.metrics_listen) == ("0.0.0.0:8080", "0.0.0.0:9090")
    assert (settings.peering_name, settings.standalone) == ("mailtrain-operator", False)
    assert settings.peering_lifetime == 30  # a standby takes over at most 30 s after a SIGKILL
    assert settings.progress_interval == 5.0
    assert settings.sender_image.startswith("ghcr.io/mailtrain-operator/sender:")
    assert settings.private_redis_image == "docker.io/library/redis:7.4"


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILTRAIN_OPERATOR_NAMESPACES", " mail, marketing ,")
    monkeypatch.setenv("MAILTRAIN_OPERATOR_STANDALONE", "true")
    monkeypatch.setenv("MAILTRAIN_OPERATOR_PROGRESS_INTERVAL", "2.5")
    monkeypatch.setenv("MAILTRAIN_OPERATOR_HEALTH_LISTEN", "10.244.0.7:8080")
    settings = load_settings()
    assert settings.namespaces == ("mail", "marketing") and not settings.clusterwide
    assert settings.standalone is True
    assert settings.progress_interval == 2.5
    assert settings.health_listen == "10.244.0.7:8080"


def test_service_link_variables_are_not_mistaken_for_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the kubelet adds for a Service named mailtrain-operator in the pod's namespace."""
    monkeypatch.setenv("MAILTRAIN_OPERATOR_SERVICE_HOST", "10.96.0.12")
    monkeypatch.setenv("MAILTRAIN_OPERATOR_SERVICE_PORT", "9090")
    monkeypatch.setenv("MAILTRAIN_OPERATOR_PORT", "tcp://10.96.0.12:9090")
    monkeypatch.setenv("MAILTRAIN_OPERATOR_PORT_9090_TCP_ADDR", "10.96.0.12")
    assert load_settings() == OperatorSettings()


def test_every_setting_is_documented_with_its_variable_in_help() -> None:
    result = _operator({}, "--help")
    assert result.returncode == 0, result.stderr
    for name, field in OperatorSettings.model_fields.items():
        assert field.description and len(field.description) > 40, f"{name} has no real description"
        assert variable(name) in result.stdout


BAD_VALUES = {
    "log level": ("LOG_LEVEL", "loud", "Input should be 'debug', 'info', 'warning' or 'error' (got 'loud')"),
    "log format": ("LOG_FORMAT", "xml", "Input should be 'text' or 'json'"),
    "namespace name": ("NAMESPACES", "mail,Marketing_EU", "'Marketing_EU' is not a namespace name"),
    "listen without host": ("HEALTH_LISTEN", "8080", "'8080' is not HOST:PORT"),
    "listen port out of range": ("METRICS_LISTEN", "0.0.0.0:70000", "is not HOST:PORT"),
    "boolean": ("STANDALONE", "maybe", "Input should be a valid boolean"),
    "interval too short": ("PROGRESS_INTERVAL", "0.1", "greater than or equal to 1 (got '0.1')"),
    "interval not a number": ("PROGRESS_INTERVAL", "5s", "Input should be a valid number"),
    "peering name": ("PEERING_NAME", "Mail_Operator", "'Mail_Operator' is not an object name"),
    "peering lifetime too short": ("PEERING_LIFETIME", "5", "greater than or equal to 10 (got '5')"),
    "peering lifetime with a unit": ("PEERING_LIFETIME", "30s", "Input should be a valid integer"),
    "empty image": ("SENDER_IMAGE", "", "at least 1 character"),
}


@pytest.mark.parametrize("case", BAD_VALUES, ids=list(BAD_VALUES))
def test_a_bad_value_gets_one_line_naming_the_variable_and_exit_code_2(case: str) -> None:
    suffix, value, expected = BAD_VALUES[case]
    result = _operator({ENV_PREFIX + suffix: value})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"mailtrain-operator: {ENV_PREFIX}{suffix}: "), lines[0]
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
