"""The build scripts' progress, as `make demo` shows it: bars on a terminal, the lines themselves in a log."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from rich.console import Console

from tests.harness.demo import tools


def test_in_a_log_each_progress_line_shows_while_the_build_still_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    go_on = tmp_path / "go-on"
    script = (
        'echo "build: kube-apiserver: 412/1583 packages, 1m05s" >&2\n'
        f"for _ in $(seq 200); do [ -e {go_on} ] && break; sleep 0.05; done\n"  # 10 s at most
        'echo "build: kube-apiserver: built in 3m24s" >&2\n'
        "echo /cache/bin\n"
    )
    seen: list[str] = []

    def release_once_seen() -> None:  # the script waits until the first line has been shown
        for _ in range(400):
            seen.append(capsys.readouterr().out)
            if "412/1583" in "".join(seen):
                go_on.touch()
                return
            threading.Event().wait(0.05)

    watcher = threading.Thread(target=release_once_seen)
    watcher.start()
    result = tools._run(["bash", "-c", script], "control-plane binaries", Console(file=io.StringIO()))
    watcher.join()
    seen.append(capsys.readouterr().out)
    assert result == "/cache/bin"
    assert go_on.exists(), "the first line was not shown before the build went on"
    assert "build: kube-apiserver: built in 3m24s" in "".join(seen)
