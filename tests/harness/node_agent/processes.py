"""How a container becomes an OS process.

A container runs as

    unshare --mount -- sh -c '<join cgroup>; <bind mounts>; cd <dir>; exec setpriv <ids> -- "$@"' sh <argv>

so its volumes appear at their mountPath in a private mount namespace (unshare makes the propagation
private, so nothing leaks to the machine, and the mounts vanish with the last process in the namespace),
and the program runs as runAsUser/runAsGroup. Every step execs, so the container's process keeps one pid
from start to finish. It leads a session of its own and lives in the container's cgroup (see cgroups),
with every process it starts.

Signals follow a container runtime: SIGTERM goes to the container's own process only (as to PID 1 in a
container), SIGKILL to the whole cgroup.

Not enforced, since there is no container runtime: a PID namespace, seccomp, AppArmor/SELinux,
capabilities beyond what a non-root uid implies, readOnlyRootFilesystem, and resource limits.
`allowPrivilegeEscalation: false` does set no_new_privs.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from tests.harness.node_agent.volumes import Mount

_SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _tool(name: str) -> str:
    """An absolute path: the container's own PATH decides nothing about the agent's tools."""
    return shutil.which(name, path=_SYSTEM_PATH) or f"/usr/bin/{name}"


UNSHARE, NSENTER, SETPRIV, MOUNT, MKDIR, DIRNAME = map(
    _tool, ("unshare", "nsenter", "setpriv", "mount", "mkdir", "dirname")
)


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    no_new_privs: bool = False

    def setpriv(self) -> list[str]:
        groups = f"--groups={','.join(map(str, self.groups))}" if self.groups else "--clear-groups"
        flags = ["--no-new-privs"] if self.no_new_privs else []
        return [SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", groups, *flags, "--"]


def _mount_script(mounts: list[Mount]) -> list[str]:
    lines = []
    # Parents first, so /data/cache lands inside /data; read-only remounts last, so that
    # mountpoints inside a read-only volume's parent can still be made.
    ordered = sorted(mounts, key=lambda m: m.target.rstrip("/").count("/"))
    for mount in ordered:
        source, target = shlex.quote(str(mount.source)), shlex.quote(mount.target)
        if mount.source.is_dir():
            lines.append(f"{MKDIR} -p {target}")
        else:
            lines.append(f'{MKDIR} -p "$({DIRNAME} {target})"; [ -e {target} ] || : > {target}')
        lines.append(f"{MOUNT} --bind {source} {target}")
    lines += [f"{MOUNT} -o remount,bind,ro {shlex.quote(m.target)}" for m in ordered if m.read_only]
    return lines


def launch_argv(
    argv: list[str], mounts: list[Mount], working_dir: str, identity: Identity, cgroup: Path
) -> list[str]:
    script = [
        "set -e",
        f"echo $$ > {shlex.quote(str(cgroup / 'cgroup.procs'))}",
        *_mount_script(mounts),
        f"{MKDIR} -p {shlex.quote(working_dir)}",
        f"cd {shlex.quote(working_dir)}",
        'exec "$@"',
    ]
    return [UNSHARE, "--mount", "--", "/bin/sh", "-c", "\n".join(script), "sh", *identity.setpriv(), *argv]


async def spawn(
    argv: list[str],
    mounts: list[Mount],
    working_dir: str,
    identity: Identity,
    env: dict[str, str],
    log: Path,
    cgroup: Path,
) -> asyncio.subprocess.Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *launch_argv(argv, mounts, working_dir, identity, cgroup),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # leads its session: how a restarted agent tells it from its children
        )


def exec_argv(pid: int, argv: list[str], identity: Identity) -> list[str]:
    """argv inside a running container: its mounts, working directory and user (exec probes, hooks)."""
    return [NSENTER, f"--target={pid}", "--mount", "--wd", "--", *identity.setpriv(), *argv]


def signal_process(pid: int, sig: signal.Signals) -> bool:
    """False when the process is gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def exit_code(returncode: int) -> int:
    """The shell's and container runtimes' convention: death by signal N is 128 + N (137 for SIGKILL)."""
    return 128 - returncode if returncode < 0 else returncode
