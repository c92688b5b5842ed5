"""A real Kubernetes control plane as local processes: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler.

The controllers make Deployments into ReplicaSets and Pods, collect garbage, finish namespace deletions and
create each namespace's `default` ServiceAccount; the scheduler binds pods to a Node, and a node agent
(tests.harness.local_node) runs them. Identities are client certificates from a throwaway CA, so RBAC tests
can act as any user or service account, and every component has the identity it has on a real cluster.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import binaries, net
from tests.harness.kubeapi import KubeApi
from tests.harness.pki import CertificateAuthority, service_account_signing_key

ADMIN_USER = "mailtrain-admin"
STARTUP_TIMEOUT = 90.0
STOP_ORDER = ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def _etcd_args(data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://{net.LOOPBACK}:{client_port}"
    return [
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls=http://{net.LOOPBACK}:{peer_port}",
        f"--initial-advertise-peer-urls=http://{net.LOOPBACK}:{peer_port}",
        f"--initial-cluster=default=http://{net.LOOPBACK}:{peer_port}",
        "--unsafe-no-fsync=true",  # test data: durability costs seconds per test run
        "--log-level=warn",
    ]


def _apiserver_args(pki: Path, etcd_port: int, api_port: int) -> list[str]:
    return [
        f"--etcd-servers=http://{net.LOOPBACK}:{etcd_port}",
        f"--bind-address={net.LOOPBACK}",
        f"--advertise-address={net.LOOPBACK}",
        f"--secure-port={api_port}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        # Node: the node agent is system:node:<name> and reads only what its pods refer to, as a kubelet.
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer=https://{net.LOOPBACK}:{api_port}/",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        # `kubectl logs` reaches the node agent's log server at the node's InternalIP.
        f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--v=0",
    ]


def _controller_manager_args(pki: Path, kubeconfig: Path, port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # Only /healthz is ever asked for, and it is always allowed: no front-proxy CA to look up.
        "--authentication-skip-lookup=true",
        f"--bind-address={net.LOOPBACK}",
        f"--secure-port={port}",
        f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}",
        "--leader-elect=false",  # one instance; an election would only delay its start by seconds
        # Each controller acts as its own ServiceAccount in kube-system, as kubeadm runs them.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",  # becomes every namespace's kube-root-ca.crt ConfigMap
        "--v=0",
    ]


def _scheduler_config(kubeconfig: Path) -> str:
    config = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "leaderElection": {"leaderElect": False},
    }
    return json.dumps(config, indent=2)


def _scheduler_args(pki: Path, config: Path, kubeconfig: Path, port: int) -> list[str]:
    return [
        f"--config={config}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # Only /healthz is ever asked for, and it is always allowed: no front-proxy CA to look up.
        "--authentication-skip-lookup=true",
        f"--bind-address={net.LOOPBACK}",
        f"--secure-port={port}",
        f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}",
        "--v=0",
    ]


def _kubeconfig(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)},
            }
        ],
        "contexts": [{"name": user, "context": {"cluster": "local", "user": user, "namespace": "default"}}],
        "current-context": user,
    }
    return json.dumps(config, indent=2)  # JSON is YAML, and kubectl reads both


@dataclass
class ControlPlane:
    root: Path
    etcd_port: int = field(default_factory=net.free_port)
    api_port: int = field(default_factory=net.free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _health_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pki = self.root / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority()

    @property
    def server(self) -> str:
        return f"https://{net.LOOPBACK}:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self, wait_for_controllers: bool = True) -> ControlPlane:
        """wait_for_controllers=False returns once the apiserver is ready, while the controller-manager and
        the scheduler are still starting: the caller starts a node meanwhile, then waits for them."""
        (self.pki / "ca.crt").write_bytes(self.ca.cert_pem)
        self.ca.serving().write(self.pki, "serving")
        sa = service_account_signing_key()
        (self.pki / "sa.pub").write_bytes(sa.cert_pem)
        (self.pki / "sa.key").write_bytes(sa.key_pem)
        admin = self.ca.client(ADMIN_USER, ("system:masters",))
        self.kubeconfig.write_text(
            _kubeconfig(self.server, self.ca.cert_pem, admin.cert_pem, admin.key_pem, ADMIN_USER)
        )
        admin_cert, admin_key = admin.write(self.pki, "admin")
        self.ca.client("kube-apiserver-kubelet-client").write(self.pki, "kubelet-client")
        try:
            self._start_etcd()
            self._start_apiserver(admin_cert, admin_key)
            self._start_controllers()
            if wait_for_controllers:
                self.wait_for_controllers()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            # A session of its own, so a Ctrl-C in pytest does not kill the servers
            # before the fixture tears them down in order.
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = proc
        return proc, log

    def _start_etcd(self) -> None:
        peer_port = net.free_port()
        binary = binaries.controlplane_binary("etcd")
        proc, log = self._spawn(
            "etcd", [str(binary), *_etcd_args(self.root / "etcd", self.etcd_port, peer_port)]
        )
        net.wait_until(
            lambda: _http_ok(f"http://{net.LOOPBACK}:{self.etcd_port}/health", None),
            what="etcd",
            timeout=STARTUP_TIMEOUT,
            process=proc,
            log=log,
        )

    def _start_apiserver(self, admin_cert: Path, admin_key: Path) -> None:
        binary = binaries.controlplane_binary("kube-apiserver")
        args = _apiserver_args(self.pki, self.etcd_port, self.api_port)
        proc, log = self._spawn("kube-apiserver", [str(binary), *args])
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(admin_cert), str(admin_key))
        for path, what in (
            ("/readyz", "kube-apiserver /readyz"),
            ("/api/v1/namespaces/default", "namespace default"),
        ):
            net.wait_until(
                lambda p=path: _http_ok(self.server + p, context),  # type: ignore[misc]
                what=what,
                timeout=STARTUP_TIMEOUT,
                process=proc,
                log=log,
                interval=0.2,
            )

    def _start_controllers(self) -> None:
        """kube-controller-manager and kube-scheduler, started together."""
        cm_kubeconfig = self.kubeconfig_for("system:kube-controller-manager")
        scheduler_kubeconfig = self.kubeconfig_for("system:kube-scheduler")
        scheduler_config = self.root / "kube-scheduler.json"
        scheduler_config.write_text(_scheduler_config(scheduler_kubeconfig))
        ports = self._health_ports = {
            "kube-controller-manager": net.free_port(),
            "kube-scheduler": net.free_port(),
        }
        self._spawn(
            "kube-controller-manager",
            [
                str(binaries.controlplane_binary("kube-controller-manager")),
                *_controller_manager_args(self.pki, cm_kubeconfig, ports["kube-controller-manager"]),
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(binaries.controlplane_binary("kube-scheduler")),
                *_scheduler_args(self.pki, scheduler_config, scheduler_kubeconfig, ports["kube-scheduler"]),
            ],
        )

    def wait_for_controllers(self) -> None:
        """Until the controller-manager and the scheduler answer on /healthz."""
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        for name, port in self._health_ports.items():
            net.wait_until(
                lambda p=port: _http_ok(f"https://{net.LOOPBACK}:{p}/healthz", context),  # type: ignore[misc]
                what=f"{name} /healthz",
                timeout=STARTUP_TIMEOUT,
                process=self.processes[name],
                log=self.root / f"{name}.log",
                interval=0.1,
            )

    def stop(self) -> None:
        # Clients of the apiserver first, then the apiserver: it holds etcd connections and
        # would log errors for them.
        for name in STOP_ORDER:
            proc = self.processes.pop(name, None)
            if proc is not None:
                net.stop_process(proc)

    # -- clients -----------------------------------------------------------------------------------------

    @functools.cached_property
    def api(self) -> KubeApi:
        """A JSON client as the admin."""
        return KubeApi(self.server, self.pki / "ca.crt", self.pki / "admin.crt", self.pki / "admin.key")

    def kubeconfig_for(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for any identity, signed by the cluster's CA (no token involved)."""
        pair = self.ca.client(user, groups)
        path = self.root / f"kubeconfig-{user.replace(':', '_')}"
        path.write_text(_kubeconfig(self.server, self.ca.cert_pem, pair.cert_pem, pair.key_pem, user))
        return path

    def kubeconfig_for_service_account(self, namespace: str, name: str) -> Path:
        user = f"system:serviceaccount:{namespace}:{name}"
        return self.kubeconfig_for(user, ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"))

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(binaries.controlplane_binary("kubectl")),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            *args,
        ]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=60, env=_no_proxy_env()
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result


def _no_proxy_env() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, [env.get("NO_PROXY", ""), net.LOOPBACK]))
    return env


def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
    # No proxy: every server here is on loopback, whatever the environment says.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
