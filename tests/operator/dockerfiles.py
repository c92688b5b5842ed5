"""Reading the images' Dockerfiles as text, and resolving their `uv sync` commands against uv.lock.

There is no container engine here to build the images, so the tests check what a build would do:
the final stage's lines, and the packages its `uv sync` flags select from the lock, resolved by
the same pinned uv (`uv export`) rather than by a parser of our own.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from tests.harness.binaries import REPO_ROOT

# uv sync flags that choose what is installed, and so must be passed to `uv export` as they are.
_SELECTING = {"--extra", "--no-extra", "--group", "--no-group", "--only-group"}
_SELECTING_SWITCHES = {
    "--all-extras",
    "--all-groups",
    "--no-dev",
    "--only-dev",
    "--dev",
    "--no-default-groups",
}
# Flags that change how it is installed, not what: left out of the export.
_INSTALLING = {"--python"}
_INSTALLING_SWITCHES = {"--frozen", "--locked", "--no-editable", "--no-install-project", "--compile-bytecode"}


def lines(dockerfile: Path) -> list[str]:
    """Instructions with continuation lines joined, comments and blank lines left out."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def final_stage(dockerfile: Path) -> list[str]:
    instructions = lines(dockerfile)
    last_from = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[last_from:]


def entrypoint(dockerfile: Path) -> list[str]:
    line = next(line for line in final_stage(dockerfile) if line.startswith("ENTRYPOINT"))
    value: list[str] = json.loads(line.removeprefix("ENTRYPOINT").strip())
    return value


def numeric_user(dockerfile: Path) -> int:
    users = [line.split()[1] for line in final_stage(dockerfile) if line.startswith("USER ")]
    assert users, f"{dockerfile}: the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"{dockerfile}: USER {uid} is not numeric (runAsNonRoot cannot check a name)"
    return int(uid)


def uv_sync_commands(dockerfile: Path) -> list[list[str]]:
    """The arguments of every `uv sync` in the file (after `uv sync`)."""
    commands = []
    for line in lines(dockerfile):
        if line.startswith("RUN "):
            for part in re.split(r"&&|;", line.removeprefix("RUN ")):
                words = shlex.split(part)
                if words[:2] == ["uv", "sync"]:
                    commands.append(words[2:])
    return commands


def selecting_flags(sync_args: list[str]) -> list[str]:
    """The flags that decide which packages are installed; fails on a flag it does not know."""
    selected: list[str] = []
    words = iter(sync_args)
    for word in words:
        name, _, inline = word.partition("=")
        if name in _SELECTING:
            selected += [name, inline or next(words)]
        elif name in _SELECTING_SWITCHES:
            selected.append(name)
        elif name in _INSTALLING:
            _ = inline or next(words)
        elif name not in _INSTALLING_SWITCHES:
            raise AssertionError(
                f"uv sync {word}: unknown flag; say in dockerfiles.py whether it selects packages"
            )
    return selected


def uv_binary() -> str:
    """The pinned uv (hack/ensure-uv.sh), the one `make venv` uses."""
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "ensure-uv.sh")], capture_output=True, text=True, check=True, timeout=300
    )
    return result.stdout.strip().splitlines()[-1]


def uv_version_pinned() -> str:
    match = re.search(r"^version=(\S+)$", (REPO_ROOT / "hack" / "ensure-uv.sh").read_text(), re.M)
    assert match
    return match.group(1)


def locked_packages(flags: list[str]) -> set[str]:
    """Every package `uv sync <flags>` may install from uv.lock, on any platform (markers ignored)."""
    result = subprocess.run(
        [uv_binary(), "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-header", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "UV_PYTHON_DOWNLOADS": "never", "UV_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    names = set()
    for line in result.stdout.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "-")):
            names.add(re.split(r"[=<>;\s\[]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names
