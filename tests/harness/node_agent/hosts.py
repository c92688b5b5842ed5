"""Each pod's /etc/hosts: the kubelet's lines, and the Service names cluster DNS would answer.

The kubelet writes `<pod dir>/etc-hosts` and bind-mounts it at /etc/hosts into each container:
localhost, the pod's own address and hostname (its FQDN too with a `subdomain`), then `hostAliases`.
The local node has no cluster DNS, so the same file also carries the Service names a pod would
resolve there (the records come from `services.ServiceDirectory`):

    <svc>.<ns>.svc.cluster.local  <svc>.<ns>.svc  <svc>.<ns>    (any namespace; a search domain
    <svc>                                                      makes `<svc>.<ns>` work in a cluster)
                                                               (the pod's own namespace only)
    <hostname>.<svc>.<ns>.svc.cluster.local ...                 (an endpoint with a hostname: StatefulSets)

one line per ready endpoint address, as cluster DNS answers a headless Service. glibc's `files` source
reads the whole file on every lookup and returns every line that names the host, so a running program
sees an update at its next getaddrinfo, with no restart and no cache to expire.

The file is rewritten in place: a bind mount pins the inode it was made with, so a new file renamed
over the old one would never reach a running container. It never shrinks either, so a reader cannot
find it cut short in the middle of a rewrite: a shorter content is padded with a comment line to the
old size, and written with one pwrite.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CLUSTER_DOMAIN = "cluster.local"
FILE_NAME = "etc-hosts"  # in the pod's directory, as the kubelet's
# The kubelet's own lines (pkg/kubelet/kubelet_pods.go, managedHostsFileContent).
_LOCAL_LINES = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


@dataclass(frozen=True)
class ServiceRecord:
    """A Service that has names in cluster DNS, with its ready endpoints: (address, hostname or "")."""

    namespace: str
    name: str
    endpoints: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PodHosts:
    """What a pod's file depends on besides the Services; fixed for the pod's life (these fields of a
    pod's spec are immutable, and so is its address)."""

    namespace: str
    ip: str
    hostname: str
    subdomain: str
    aliases: tuple[tuple[str, tuple[str, ...]], ...]
    host_network: bool
    service_names: bool

    @classmethod
    def of(cls, pod: dict[str, Any], ip: str) -> PodHosts:
        spec = pod["spec"]
        aliases = tuple((a["ip"], tuple(a.get("hostnames") or ())) for a in spec.get("hostAliases") or ())
        return cls(
            namespace=pod["metadata"]["namespace"],
            ip=ip,
            hostname=pod_hostname(pod),
            subdomain=spec.get("subdomain", ""),
            aliases=aliases,
            host_network=bool(spec.get("hostNetwork")),
            service_names=resolves_service_names(spec),
        )


def pod_hostname(pod: dict[str, Any]) -> str:
    """The kubelet's rule: spec.hostname or the pod's name, at most 63 characters, no trailing dash or dot."""
    name: str = pod["spec"].get("hostname") or pod["metadata"]["name"]
    return name[:63].rstrip("-.")


def resolves_service_names(spec: dict[str, Any]) -> bool:
    """Whether the pod's dnsPolicy gives it cluster DNS: ClusterFirst (the default) off the host network,
    ClusterFirstWithHostNet on it; `Default` and `None` do not."""
    policy: str = spec.get("dnsPolicy", "ClusterFirst")
    if spec.get("hostNetwork"):
        return policy == "ClusterFirstWithHostNet"
    return policy in ("ClusterFirst", "ClusterFirstWithHostNet")


def _names(name: str, namespace: str, own_namespace: str) -> list[str]:
    names = [f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}", f"{name}.{namespace}.svc", f"{name}.{namespace}"]
    return [*names, name] if namespace == own_namespace else names


def service_lines(records: Iterable[ServiceRecord], own_namespace: str) -> list[str]:
    lines = []
    for record in sorted(records, key=lambda r: (r.namespace, r.name)):
        for address, hostname in sorted(record.endpoints):
            lines.append(f"{address}\t{' '.join(_names(record.name, record.namespace, own_namespace))}")
            if hostname:
                names = _names(f"{hostname}.{record.name}", record.namespace, own_namespace)
                lines.append(f"{address}\t{' '.join(names)}")
    return lines


def render(pod: PodHosts, records: Iterable[ServiceRecord], machine_hosts: str = "") -> bytes:
    """The file's content. A host-network pod starts from the machine's own file, as the kubelet's does."""
    if pod.host_network:
        text = "# Kubernetes-managed hosts file (host network).\n" + machine_hosts
        if text and not text.endswith("\n"):
            text += "\n"
    elif pod.subdomain:
        fqdn = f"{pod.hostname}.{pod.subdomain}.{pod.namespace}.svc.{CLUSTER_DOMAIN}"
        text = f"# Kubernetes-managed hosts file.\n{_LOCAL_LINES}{pod.ip}\t{fqdn}\t{pod.hostname}\n"
    else:
        text = f"# Kubernetes-managed hosts file.\n{_LOCAL_LINES}{pod.ip}\t{pod.hostname}\n"
    if pod.aliases:
        text += "\n# Entries added by HostAliases.\n"
        text += "".join(f"{ip}\t{hostname}\n" for ip, hostnames in pod.aliases for hostname in hostnames)
    if pod.service_names:
        text += "\n# Service names: the node agent's stand-in for cluster DNS (docs/development.md).\n"
        text += "".join(f"{line}\n" for line in service_lines(records, pod.namespace))
    return text.encode()


def padded(content: bytes, size: int) -> bytes:
    """content, made at least `size` bytes long by a trailing comment line."""
    missing = size - len(content)
    if missing <= 0:
        return content
    if missing == 1:
        return content + b"\n"
    return content + b"#" + b" " * (missing - 2) + b"\n"


def write_in_place(path: Path, content: bytes) -> bool:
    """Makes the file show `content` (padded), keeping its inode; returns whether it changed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        data = padded(content, size)
        if os.pread(fd, size + 1, 0) == data:
            return False
        os.fchmod(fd, 0o644)
        os.pwrite(fd, data, 0)
        return True
    finally:
        os.close(fd)


class HostsFiles:
    """The hosts files of the node's pods, rewritten whenever the Services' records change."""

    def __init__(self, records: Callable[[], list[ServiceRecord]], machine_hosts: Path = Path("/etc/hosts")):
        self._records = records
        try:
            self._machine_hosts = machine_hosts.read_text()
        except OSError:
            self._machine_hosts = ""
        self._pods: dict[str, tuple[Path, PodHosts]] = {}

    def add(self, uid: str, path: Path, pod: PodHosts) -> None:
        """Writes the pod's file (in place, if an earlier agent made it: containers may have it mounted)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._pods[uid] = (path, pod)
        write_in_place(path, render(pod, self._records(), self._machine_hosts))

    def forget(self, uid: str) -> None:
        self._pods.pop(uid, None)

    def refresh(self) -> None:
        records = self._records()
        for uid, (path, pod) in list(self._pods.items()):
            try:
                if write_in_place(path, render(pod, records, self._machine_hosts)):
                    log.debug("rewrote the hosts file of pod %s", uid)
            except OSError as exc:  # the pod's directory went with it
                log.warning("hosts file of pod %s: %s", uid, exc)
