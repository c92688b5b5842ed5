"""The binaries `make demo` needs, built or found in the cache, with a progress bar per binary while a
cold build runs: hack/controlplane/build.sh (kube-apiserver and friends, helm), hack/prometheus.sh
(prometheus, promtool) and hack/mailpit.sh.

The scripts report on stderr (hack/go-progress.sh): `build: <name>: 412/1583 packages, 1m05s`. Here
each report moves that binary's bar; any other line is printed as it comes.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tests.harness.binaries import BUILD_SCRIPT, PROMETHEUS_BUILD_SCRIPT, MissingBinaryError
from tests.harness.demo import mailpit

LINE = re.compile(r"^build: (?P<name>[\w.-]+): (?P<what>.*?)(?:, (?P<elapsed>[\dms]+))?$")
COUNT = re.compile(r"^(?P<done>\d+)/(?P<total>\d+) packages$")


def parse(line: str) -> tuple[str, str] | None:
    """(binary, what it does now) from a progress line, or None for any other line."""
    found = LINE.match(line.strip())
    return (found["name"], found["what"]) if found else None


def _run(command: list[str], what: str, console: Console) -> str:
    """Runs a build script; its progress lines drive the bars. Its last stdout line is the result.
    Not on a terminal (a log, a pipe), rich would draw the bars only once they are all done: there the
    lines themselves are printed as they come, every 10 s."""
    started = time.monotonic()
    if console.is_terminal:
        env = dict(os.environ, MAILTRAIN_PROGRESS_INTERVAL="1")
        with _bars(console) as progress:
            tasks: dict[str, TaskID] = {}

            def show(line: str) -> None:
                parsed = parse(line)
                if parsed is None:
                    progress.console.print(line.rstrip(), markup=False, highlight=False)
                    return
                name, now = parsed
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=None, what="")
                _advance(progress, tasks[name], now)

            code, out = _stream(command, env, show)
    else:
        code, out = _stream(command, dict(os.environ), lambda line: print(line.rstrip(), flush=True))
    if code != 0:
        raise MissingBinaryError(f"{' '.join(command)} failed with exit code {code} ({what})")
    if time.monotonic() - started > 5:
        console.print(f"[green]✔[/] {what} built in {time.monotonic() - started:.0f} s")
    return out.strip().splitlines()[-1]


def _bars(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[what]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _stream(command: list[str], env: dict[str, str], show: Callable[[str], None]) -> tuple[int, str]:
    """(exit code, stdout) of a build script, each stderr line shown as it comes."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            show(line)
        out = proc.stdout.read()
    return proc.returncode, out


def _advance(progress: Progress, task: TaskID, now: str) -> None:
    counted = COUNT.match(now)
    if counted:
        progress.update(task, total=int(counted["total"]), completed=int(counted["done"]), what="packages")
    elif now.startswith("built in"):
        total = progress.tasks[task].total or 1
        progress.update(task, total=total, completed=total, what="built")
        progress.stop_task(task)
    else:
        progress.update(task, what=now)  # resolving packages, linking, downloading ...


def ensure(console: Console) -> tuple[Path, Path]:
    """(the control-plane bin directory, the mailpit binary), building what is missing."""
    bin_dir = Path(_run([str(BUILD_SCRIPT)], "control-plane binaries", console))
    os.environ["MAILTRAIN_BIN_DIR"] = str(bin_dir)  # the harness asks build.sh no more
    prometheus = _run([str(PROMETHEUS_BUILD_SCRIPT)], "prometheus", console)
    os.environ["MAILTRAIN_PROMETHEUS_DIR"] = prometheus  # nor hack/prometheus.sh
    binary = Path(_run(mailpit.build_command(), "mailpit", console))
    return bin_dir, binary
