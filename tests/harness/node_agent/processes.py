"""How a container becomes an OS process.

A container runs as

    unshare --mount --uts -- bash -c '<join cgroup>; <mounts>; cd <dir>; exec setpriv <ids> -- "$@"' sh <argv>

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


FIRST_FD = 10  # bash opens the mount sources on fds from here


def _open_sources(mounts: list[Mount]) -> tuple[list[str], dict[int, str]]:
    """Opens every source before anything is mounted: a source under a mountPath (the node's directory
    sits in /tmp in tests, and each container gets a /tmp of its own) is hidden once that is mounted, but
    /proc/self/fd/N still leads to it."""
    lines, sources = [], {}
    for index, mount in enumerate(mounts):
        if mount.source.is_dir() or mount.source.is_file():
            fd = FIRST_FD + index
            lines.append(f"exec {fd}<{shlex.quote(str(mount.source))}")
            sources[index] = f"/proc/self/fd/{fd}"
        else:  # a socket or device from a hostPath cannot be opened like that; it is not hidden either
            sources[index] = str(mount.source)
    return lines, sources


def _mount_script(mounts: list[Mount], sources: dict[int, str]) -> list[str]:
    lines = []
    # Parents first, so /data/cache lands inside /data; read-only remounts last, so that
    # mountpoints inside a read-only volume's parent can still be made.
    ordered = sorted(enumerate(mounts), key=lambda item: item[1].target.rstrip("/").count("/"))
    for index, mount in ordered:
        target = shlex.quote(mount.target)
        if mount.source.is_dir():
            lines.append(f"{MKDIR} -p {target}")
        else:
            lines.append(f'{MKDIR} -p "$({DIRNAME} {target})"; [ -e {target} ] || : > {target}')
        lines.append(f"{MOUNT} --no-canonicalize --bind {shlex.quote(sources[index])} {target}")
    lines += [f"{MOUNT} -o remount,bind,ro {shlex.quote(m.target)}" for _, m in ordered if m.read_only]
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
    own_dir: bool = False,
) -> list[str]:
    """readable: directories the program needs even as a user who may not reach them on the machine;
    staging: an empty directory of the agent's where that is prepared. own_dir: the working directory is
    the agent's scratch directory, entered before anything can hide it; a workingDir of the pod's may be
    inside a volume, so that one is entered once the volumes are there."""
    opening, sources = _open_sources(mounts)
    enter = [f"{MKDIR} -p {shlex.quote(working_dir)}", f"cd {shlex.quote(working_dir)}"]
    script = [
        "set -e",
        # A container runtime's umask, whatever the agent's: mountpoints made here (the path down to an
        # image directory bound back in the private /tmp) must be open to the container's user.
        "umask 022",
        f"echo $$ > {shlex.quote(str(cgroup / 'cgroup.procs'))}",
        'if [ -n "$HOSTNAME" ]; then echo "$HOSTNAME" > /proc/sys/kernel/hostname; fi',  # its own UTS
        *opening,
        *(enter if own_dir else []),
        *(_readable_script(list(readable), staging) if identity.uid != 0 and staging else []),
        *_mount_script(mounts, sources),
        *(f"exec {fd.rsplit('/', 1)[1]}<&-" for fd in sources.values() if fd.startswith("/proc/self/fd/")),
        *([] if own_dir else enter),
        'exec "$@"',
    ]
    # bash, not sh: dash cannot open file descriptors above 9.
    return [
        UNSHARE,
        "--mount",
        "--uts",
        "--",
        "/bin/bash",
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
    own_dir: bool = False,
) -> asyncio.subprocess.Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    script = launch_argv(argv, mounts, working_dir, identity, cgroup, readable, staging, own_dir)
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *script,
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
