"""MAILTRAIN_REDIS_URL: a whole Redis URL, password included, from a Secret; it wins over redis.url.

A pool whose `redis.urlSecretRef` names a Secret gets that value as this variable in its pods, so the
sender must take it, check it without ever printing it, and connect with the password it carries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailtrain_sender.config import (
    RESTART_REQUIRED,
    ConfigError,
    Secrets,
    parse_config,
    restart_settings,
)
from mailtrain_sender.layout import PoolKeys
from tests.harness.binaries import REPO_ROOT
from tests.harness.redis_server import RedisServer
from tests.harness.senders import DEFAULTS, SenderProcess, merge

PASSWORD = "s3cret-in-the-url"  # the test's own throwaway Redis


def test_the_url_variable_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILTRAIN_REDIS_URL", f"redis://:{PASSWORD}@redis.example:6379/3")
    secrets = Secrets()
    assert secrets.redis_url is not None
    assert secrets.redis_url.get_secret_value() == f"redis://:{PASSWORD}@redis.example:6379/3"
    assert PASSWORD not in repr(secrets) and PASSWORD not in str(secrets)


@pytest.mark.parametrize("url", [f"http://:{PASSWORD}@redis.example/0", f"redis://:{PASSWORD}@[::1/0"])
def test_a_bad_url_variable_is_refused_without_showing_it(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILTRAIN_REDIS_URL", url)
    with pytest.raises(ConfigError, match=r"^MAILTRAIN_REDIS_URL: ") as caught:
        Secrets()
    assert PASSWORD not in str(caught.value)


def test_a_bad_url_variable_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "sender.toml"
    path.write_text('[smtp]\nhost = "relay.example"\n')
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT / "sender_image"),
        "MAILTRAIN_REDIS_URL": f"tcp://:{PASSWORD}@redis.example",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mailtrain_sender", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mailtrain-sender: MAILTRAIN_REDIS_URL: must start with redis://, rediss:// or unix:// "
        "(the value is a secret and not shown)"
    ]


def test_restart_settings_name_what_a_reload_cannot_change() -> None:
    config = parse_config('[redis]\nurl = "redis://r:6379/1"\n[smtp]\nhost = "relay.example"\n')
    values = restart_settings(config)
    assert list(values) == list(RESTART_REQUIRED)
    assert values["redis"] == {"enabled": True, "url": "redis://r:6379/1", "db": None}
    assert values["worker.pool"] == "default" and values["queue.processes"] == 1
    limits = parse_config(
        '[redis]\nurl = "redis://r:6379/1"\n[queue]\nmaxParallelCampaigns = 3\n'
        '[smtp]\nhost = "relay.example"\nmaxConnections = 9\nmaxMessages = 7\n'
        "[smtp.throttling]\nmessagesPerSecond = 5\n"
    )
    assert restart_settings(limits) == values  # limits reload; they never need a restart


def test_a_sender_connects_with_the_url_variable_and_never_logs_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    sender = None
    try:
        with server.client() as client:
            client.config_set("requirepass", PASSWORD)
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        # redis.url in the file points nowhere: only the variable can make this sender ready.
        settings = merge(DEFAULTS, {"redis": {"url": "redis://127.0.0.1:1/0"}, "worker": {"pool": "url"}})
        sender = SenderProcess(
            tmp_path / "sender", "sender-url", settings, env={"MAILTRAIN_REDIS_URL": url}
        ).start()
        with server.client() as client:
            client.auth(PASSWORD)
            assert client.zscore(PoolKeys("url").workers, "sender-url") is not None
    finally:
        if sender is not None:
            sender.stop()
        server.stop()
    log = sender.log_text()
    assert "joining pool url" in log
    assert PASSWORD not in log
