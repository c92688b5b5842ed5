"""A real Kubernetes control plane (etcd + kube-apiserver) as local processes.

This is what controller-runtime's envtest does: no kubelet, no controller-manager,
but the real API machinery (CRDs, CEL, subresources, RBAC, admission, server-side
apply). Identities are client certificates from a throwaway CA, so RBAC tests can
act as any user or service account without tokens.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import binaries, net
from tests.harness.pki import CertificateAuthority, service_account_signing_key

ADMIN_USER = "mailtrain-admin"
STARTUP_TIMEOUT = 90.0


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
        "--authorization-mode=RBAC",
        f"--service-account-issuer=https://{net.LOOPBACK}:{api_port}/",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        # No controller-manager mints tokens here, so the admission plugin that
        # expects them would reject every pod.
        "--disable-admission-plugins=ServiceAccount",
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

    def start(self) -> ControlPlane:
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
        try:
            self._start_etcd()
            self._start_apiserver(admin_cert, admin_key)
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

    def stop(self) -> None:
        # apiserver first: it holds etcd connections and would log errors for them.
        for name in ("kube-apiserver", "etcd"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                net.stop_process(proc)

    # -- clients -----------------------------------------------------------------------------------------

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
