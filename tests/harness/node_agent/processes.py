"""How a container becomes an OS process.

A container runs as

    unshare --mount --uts -- sh -c '<join cgroup>; <mounts>; cd <dir>; exec setpriv <ids> -- "$@"' sh <argv>

so its volumes appear at their mountPath in a private mount namespace (unshare makes the propagation
private, so nothing leaks to the machine, and the mounts vanish with the last process in the namespace),
its hostname is the pod's (a UTS namespace of its own), and the program runs as runAsUser/runAsGroup.
Every step execs, so the container's process keeps one pid from start to finish. It leads a session of
its own and lives in the container's cgroup (see cgroups), with every process it starts.

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
from collections.abc import Sequence
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


def hidden_ancestor(path: Path) -> Path | None:
    """The outermost directory above `path` that other users may not enter (such as /root, mode 0700)."""
    for ancestor in reversed(path.parents):
        try:
            if ancestor != Path("/") and not ancestor.stat().st_mode & 0o001:
                return ancestor
        except OSError:
            return None
    return None


def _readable_script(readable: list[Path], staging: Path) -> list[str]:
    """Makes each directory reachable for any user, in the container's mount namespace only: the hidden
    ancestor is covered by a tmpfs (mode 0755) holding just those directories, bind-mounted, as an image
    has only what it needs. The tmpfs is filled at `staging` and then moved into place."""
    by_ancestor: dict[Path, list[Path]] = {}
    for directory in readable:
        ancestor = hidden_ancestor(directory)
        if ancestor is not None:
            by_ancestor.setdefault(ancestor, []).append(directory)
    lines = []
    for index, (ancestor, directories) in enumerate(by_ancestor.items()):
        tmp = staging / str(index)
        tmp.mkdir(parents=True, exist_ok=True)
        lines.append(f"{MOUNT} -t tmpfs -o mode=0755,size=64k node-agent {shlex.quote(str(tmp))}")
        for directory in directories:
            inside = shlex.quote(str(tmp / directory.relative_to(ancestor)))
            lines += [f"{MKDIR} -p {inside}", f"{MOUNT} --bind {shlex.quote(str(directory))} {inside}"]
        lines.append(f"{MOUNT} --move {shlex.quote(str(tmp))} {shlex.quote(str(ancestor))}")
    return lines


def launch_argv(
    argv: list[str],
    mounts: list[Mount],
    working_dir: str,
    identity: Identity,
    cgroup: Path,
    readable: Sequence[Path] = (),
    staging: Path | None = None,
) -> list[str]:
    """readable: directories the program needs even as a user who may not reach them on the machine;
    staging: an empty directory of the agent's where that is prepared."""
    needs_access = identity.uid != 0 and staging is not None
    script = [
        "set -e",
        f"echo $$ > {shlex.quote(str(cgroup / 'cgroup.procs'))}",
        'if [ -n "$HOSTNAME" ]; then echo "$HOSTNAME" > /proc/sys/kernel/hostname; fi',  # its own UTS
        *(_readable_script(list(readable), staging) if needs_access and staging else []),
        *_mount_script(mounts),
        f"{MKDIR} -p {shlex.quote(working_dir)}",
        f"cd {shlex.quote(working_dir)}",
        'exec "$@"',
    ]
    return [
        UNSHARE,
        "--mount",
        "--uts",
        "--",
        "/bin/sh",
        "-c",
        "\n".join(script),
        "sh",
        *identity.setpriv(),
        *argv,
    ]


async def spawn(
    argv: list[str],
    mounts: list[Mount],
    working_dir: str,
    identity: Identity,
    env: dict[str, str],
    log: Path,
    cgroup: Path,
    readable: Sequence[Path] = (),
    staging: Path | None = None,
) -> asyncio.subprocess.Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *launch_argv(argv, mounts, working_dir, identity, cgroup, readable, staging),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # leads its session: how a restarted agent tells it from its children
        )


def exec_argv(pid: int, argv: list[str], identity: Identity) -> list[str]:
    """argv inside a running container: its mounts, working directory and user (exec probes, hooks)."""
    return [NSENTER, f"--target={pid}", "--mount", "--uts", "--wd", "--", *identity.setpriv(), *argv]


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
