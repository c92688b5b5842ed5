"""python -m tests.harness.node_agent --kubeconfig K --root DIR [--node-name local-0] [--images FILE]

Runs as root: it mounts volumes in private mount namespaces and starts processes as other users.
The kubeconfig must be a client certificate for system:node:<node-name> in the group system:nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from tests.harness.node_agent.agent import AgentConfig, NodeAgent
from tests.harness.node_agent.images import REPO_ROOT, ImageTable, default_images, load_images
from tests.harness.node_agent.log_server import ServingIdentity


def _kube_version() -> str:
    versions = (REPO_ROOT / "hack" / "controlplane" / "versions.env").read_text()
    for line in versions.splitlines():
        if line.startswith("KUBE_VERSION="):
            return "v" + line.split("=", 1)[1].strip()
    return "v0.0.0"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="the node's directory: pods, logs, state")
    parser.add_argument("--node-name", default="local-0")
    parser.add_argument("--images", type=Path, action="append", default=[], help="TOML with extra images")
    parser.add_argument("--serving-cert", type=Path, help="certificate for the log API (kubectl logs)")
    parser.add_argument("--serving-key", type=Path)
    parser.add_argument("--client-ca", type=Path, help="CA of the apiserver's kubelet client certificate")
    parser.add_argument(
        "--proxy-kubeconfig",
        type=Path,
        help="kube-proxy's identity (system:kube-proxy): Service names in the pods' /etc/hosts",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.stderr.write("the node agent runs as root: it mounts volumes and sets each container's user\n")
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    images = default_images()
    for path in args.images:
        images += load_images(path)
    serving = None
    if args.serving_cert and args.serving_key and args.client_ca:
        serving = ServingIdentity(args.serving_cert, args.serving_key, args.client_ca)
    config = AgentConfig(
        node_name=args.node_name,
        kubeconfig=args.kubeconfig,
        root=args.root,
        images=ImageTable(images),
        version=_kube_version(),
        serving=serving,
        proxy_kubeconfig=args.proxy_kubeconfig,
    )
    asyncio.run(NodeAgent(config).run())


if __name__ == "__main__":
    main()
