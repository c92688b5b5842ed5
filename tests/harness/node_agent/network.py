"""Pod IPs: an address per pod, from a /24 that this node agent alone hands out, routed to loopback.

A pod's address has to be one the apiserver accepts in an EndpointSlice, and EndpointSlice (and Endpoints)
validation refuses loopback addresses ("may not be in the loopback range (127.0.0.0/8, ::1/128)"). So
the agent takes a range 10.244.N.0/24 and adds a `local` route for it on the loopback interface
(`ip route replace local 10.244.N.0/24 dev lo`), which is what makes 127.0.0.0/8 work: every address in
the range is this machine's, any process can bind one, and traffic never leaves `lo`. Two pods can then
listen on the same port. The route goes when the agent stops (an agent that crashed leaves it; the next
one on that range takes it over).

Agents on one machine (a `make cluster-up` cluster and a test session, say) never share a range: each
holds a lock file for its range while it runs. A restarted agent asks for the range it had, so the pods
it adopts keep their addresses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

LOCK_DIR = Path("/tmp/mailtrain-node-agent/ranges")
PREFIX = "10.244"  # the pod network kubeadm's guides (flannel) use
FIRST_RANGE, LAST_RANGE = 1, 254
FIRST_HOST, LAST_HOST = 2, 254  # .0 and .255 are no hosts, .1 is a gateway's by custom


class NoFreeRangeError(RuntimeError):
    pass


def _ip(*args: str) -> None:
    ip = shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if ip is None:
        raise RuntimeError("`ip` is not installed; install the Debian package 'iproute2'")
    subprocess.run([ip, *args], check=True, capture_output=True, text=True)


def route_range(cidr: str) -> None:
    _ip("route", "replace", "local", cidr, "dev", "lo")


def unroute_range(cidr: str) -> None:
    with contextlib.suppress(subprocess.CalledProcessError):  # not there: nothing to remove
        _ip("route", "del", "local", cidr, "dev", "lo")


class AddressPool:
    def __init__(self, state_file: Path) -> None:
        preferred = None
        if state_file.exists():
            preferred = json.loads(state_file.read_text()).get("range")
        self.range, self._lock_fd = _lock_range(preferred)
        state_file.write_text(json.dumps({"range": self.range, "cidr": self.cidr}))
        route_range(self.cidr)
        self._by_pod: dict[str, str] = {}
        self._next = FIRST_HOST

    @property
    def cidr(self) -> str:
        return f"{PREFIX}.{self.range}.0/24"

    def owns(self, address: str) -> bool:
        return address.startswith(f"{PREFIX}.{self.range}.")

    def allocate(self, pod_uid: str, preferred: str = "") -> str:
        """The pod's address: the one it had (after an agent restart), else the next free one in turn."""
        if pod_uid in self._by_pod:
            return self._by_pod[pod_uid]
        used = set(self._by_pod.values())
        if preferred and self.owns(preferred) and preferred not in used:
            self._by_pod[pod_uid] = preferred
            return preferred
        # Round robin, so an address just freed is not handed out again at once: clients that still
        # hold a deleted pod's address should find nothing there rather than a stranger.
        size = LAST_HOST - FIRST_HOST + 1
        for offset in range(size):
            host = FIRST_HOST + (self._next - FIRST_HOST + offset) % size
            address = f"{PREFIX}.{self.range}.{host}"
            if address not in used:
                self._next = host + 1
                self._by_pod[pod_uid] = address
                return address
        raise NoFreeRangeError(f"all {size} pod addresses of {self.cidr} are in use")

    def release(self, pod_uid: str) -> None:
        self._by_pod.pop(pod_uid, None)

    def close(self) -> None:
        unroute_range(self.cidr)
        os.close(self._lock_fd)


def _lock_range(preferred: int | None) -> tuple[int, int]:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    candidates = list(range(FIRST_RANGE, LAST_RANGE + 1))
    if preferred in candidates:
        candidates.remove(preferred)
        candidates.insert(0, preferred)
    for candidate in candidates:
        fd = os.open(LOCK_DIR / f"{PREFIX}.{candidate}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return candidate, fd
    raise NoFreeRangeError(
        f"every range {PREFIX}.{FIRST_RANGE}-{LAST_RANGE}.0/24 is held by another node agent"
    )
