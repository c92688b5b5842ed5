"""sender.toml: defaults, validation, secrets, and one clear line with exit code 2 for a bad file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailtrain_sender.config import ConfigError, Secrets, load_config, parse_config
from tests.harness.binaries import REPO_ROOT

MINIMAL = '[smtp]\nhost = "relay.example"\n'


def test_defaults_follow_the_seed() -> None:
    config = parse_config(MINIMAL)
    assert config.queue.max_parallel_campaigns == 0  # unset means unlimited
    assert config.queue.processes == 1
    assert config.redis.enabled is True
    assert config.worker.lease_ttl == 10.0
    assert config.smtp.throttling.messages_per_second == 0  # unlimited


def test_seed_style_sections_parse() -> None:
    config = parse_config(
        '[redis]\nenabled = true\nurl = "redis://redis:6379"\ndb = 5\n'
        "[queue]\nprocesses = 4\nmaxParallelCampaigns = 5\n"
        '[smtp]\nhost = "relay"\nport = 2525\nsecurity = "tls"\nmaxConnections = 20\nmaxMessages = 1000\n'
        "[smtp.throttling]\nmessagesPerSecond = 50\n"
        '[worker]\nleaseTtl = "15s"\nackInterval = "20ms"\n'
    )
    assert (config.queue.processes, config.queue.max_parallel_campaigns) == (4, 5)
    assert (config.smtp.max_connections, config.smtp.max_messages, config.smtp.security) == (20, 1000, "tls")
    assert config.smtp.throttling.messages_per_second == 50
    assert config.smtp.throttling.effective_burst == 5
    assert config.redis.db == 5
    assert (config.worker.lease_ttl, config.worker.ack_interval) == (15.0, 0.02)


BAD_FILES = {
    "zero processes": ("[queue]\nprocesses = 0\n" + MINIMAL, "queue.processes"),
    "negative parallel": ("[queue]\nmaxParallelCampaigns = -1\n" + MINIMAL, "queue.maxParallelCampaigns"),
    "misspelt key": (MINIMAL + "maxConection = 3\n", "smtp.maxConection: unknown setting"),
    "secret in file": (MINIMAL + 'password = "hunter2"\n', "'password' is a secret"),
    "several processes without redis": (
        "[redis]\nenabled = false\n[queue]\nprocesses = 2\n" + MINIMAL,
        "queue.processes must be 1 when redis.enabled is false",
    ),
    "password in redis url": ('[redis]\nurl = "redis://:pw@r:6379"\n' + MINIMAL, "redis.url"),
    "no smtp section": ("[queue]\nprocesses = 1\n", "smtp: required setting is missing"),
    "bad duration": (MINIMAL + '[worker]\nleaseTtl = "soon"\n', "worker.leaseTtl"),
    "bad security": (MINIMAL + 'security = "ssl"\n', "smtp.security"),
    "not toml": ("[smtp\nhost=", "not valid TOML"),
    # Finding 18: settings that contradict each other are refused, each with what to change.
    "one id for several processes": (
        '[queue]\nprocesses = 3\n[worker]\nid = "sender-0"\n' + MINIMAL,
        "worker.id must not be set when queue.processes > 1",
    ),
    "heartbeat too rare for the ttl": (
        MINIMAL + "[worker]\nleaseTtl = 2\nrebalanceInterval = 1\n",
        "worker.rebalanceInterval (1s) must be at most a quarter of worker.leaseTtl (2s)",
    ),
    "acknowledgements too rare for the ttl": (
        MINIMAL + "[worker]\nleaseTtl = 2\nackInterval = 1\n",
        "worker.ackInterval (1s) must be at most a tenth of worker.leaseTtl (2s)",
    ),
    "redis password in the file names the redis variable": (
        '[redis]\npassword = "x"\n' + MINIMAL,
        "MAILTRAIN_REDIS_PASSWORD",
    ),
    "smtp password in the file names the smtp variable": (
        MINIMAL + 'password = "x"\n',
        "MAILTRAIN_SMTP_PASSWORD",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_file_gets_one_line_naming_the_field_and_exit_code_2(case: str, tmp_path: Path) -> None:
    text, expected = BAD_FILES[case]
    path = tmp_path / "sender.toml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "mailtrain_sender", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "sender_image")},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert str(path) in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_secrets_come_from_environment_or_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "password").write_text("from-file\n")
    monkeypatch.setenv("MAILTRAIN_SMTP_USERNAME", "mailer")
    monkeypatch.setenv("MAILTRAIN_SMTP_PASSWORD_FILE", str(tmp_path / "password"))
    secrets = Secrets()
    assert secrets.smtp_username is not None and secrets.smtp_username.get_secret_value() == "mailer"
    assert secrets.smtp_password is not None and secrets.smtp_password.get_secret_value() == "from-file"
    assert "from-file" not in repr(secrets)  # SecretStr keeps it out of logs and reprs
    assert secrets.redis_password is None


def test_unreadable_secret_file_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILTRAIN_REDIS_PASSWORD_FILE", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="MAILTRAIN_REDIS_PASSWORD_FILE"):
        Secrets()


def test_finding_14_the_default_retries_outlast_greylisting() -> None:
    retry = parse_config(MINIMAL).smtp.retry
    delays = [min(retry.max_backoff, retry.backoff * 2**attempt) for attempt in range(retry.max_attempts - 1)]
    assert delays[0] >= 60  # greylisting asks to come back after a minute or more ...
    assert sum(delays) >= 15 * 60  # ... and some lists take a quarter of an hour
    assert "MAILTRAIN_SMTP_PASSWORD" not in str(
        BAD_FILES["redis password in the file names the redis variable"]
    )


def test_listen_on_the_command_line_overrides_the_file_and_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "sender.toml"
    path.write_text(MINIMAL)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "sender_image")}
    command = [sys.executable, "-m", "mailtrain_sender", "--config", str(path), "--validate"]
    assert subprocess.run([*command, "--listen", "10.244.0.7:9090"], env=env, timeout=60).returncode == 0
    bad = subprocess.run(
        [*command, "--listen", "nowhere"], capture_output=True, text=True, env=env, timeout=60
    )
    assert (
        bad.returncode == 2 and bad.stderr.strip() == "mailtrain-sender: --listen: 'nowhere' is not HOST:PORT"
    )
