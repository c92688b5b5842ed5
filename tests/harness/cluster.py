"""Start or stop the local cluster by hand (make cluster-up / cluster-down): the control plane and one node.

make cluster-up            # prints: export KUBECONFIG=...
kubectl get nodes,pods -A
python -m tests.harness.cluster logs POD [-n NAMESPACE] [-c CONTAINER] [-p]
make cluster-down          # stops everything; no process, mount or route is left

MAILTRAIN_CLUSTER_DIR moves the cluster's directory (default: .local-cluster in the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from tests.harness import net
from tests.harness.binaries import REPO_ROOT, controlplane_bin_dir
from tests.harness.controlplane import STOP_ORDER, ControlPlane
from tests.harness.local_node import STOP_TIMEOUT, LocalNode
from tests.harness.net import process_running
from tests.harness.node_agent.cgroups import NodeCgroups
from tests.harness.node_agent.logfiles import log_files
from tests.harness.node_agent.network import unroute_range

STATE_DIR = Path(os.environ.get("MAILTRAIN_CLUSTER_DIR", REPO_ROOT / ".local-cluster")).resolve()
STATE_FILE = STATE_DIR / "state.json"
NODE_DIR = STATE_DIR / "node"
AGENT = "node-agent"


def up() -> int:
    if STATE_FILE.exists():
        state = json.loads(STATE_FILE.read_text())
        if all(process_running(pid) for pid in state["pids"].values()):
            print(f"already running\nexport KUBECONFIG={state['kubeconfig']}")
            return 0
        down()
    started = time.monotonic()
    shutil.rmtree(STATE_DIR / "etcd", ignore_errors=True)  # a new CA each time: no state from an old one
    plane = ControlPlane(STATE_DIR).start(wait_for_controllers=False)
    node = LocalNode(plane, NODE_DIR)
    try:
        node.start()  # while the controllers start
        plane.wait_for_controllers()
    except BaseException:
        node.stop()
        plane.stop()
        raise
    assert node.process is not None
    # Pods can be created as soon as this returns: the ServiceAccount admission plugin wants `default`.
    net.wait_until(
        lambda: plane.api.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
        what="the default ServiceAccount",
        timeout=60,
    )
    pids = {name: proc.pid for name, proc in plane.processes.items()}
    pids[AGENT] = node.process.pid
    STATE_FILE.write_text(
        json.dumps({"pids": pids, "kubeconfig": str(plane.kubeconfig), "server": plane.server})
    )
    print(f"cluster up in {time.monotonic() - started:.1f}s at {plane.server}, with node {node.name}")
    print(f"logs: control plane in {STATE_DIR}, node agent in {node.log},")
    print(f"      containers in {node.logs_dir}/<namespace>_<pod>_<uid>/<container>/<restart>.log")
    print(f"export KUBECONFIG={plane.kubeconfig}")
    print(f'export PATH="{controlplane_bin_dir()}:$PATH"   # kubectl and helm matching the server')
    return 0


def down() -> int:
    if not STATE_FILE.exists():
        print("no local cluster is running")
        return 0
    pids = json.loads(STATE_FILE.read_text())["pids"]
    # The node first: it stops its containers (SIGTERM, then SIGKILL after at most 10 s).
    if AGENT in pids:
        net.stop_pid(pids[AGENT], STOP_TIMEOUT)
    _clean_node()
    for name in STOP_ORDER:
        if name in pids:
            net.stop_pid(pids[name], 10)
    STATE_FILE.unlink()
    print("cluster stopped")
    return 0


def _clean_node() -> None:
    """What a node agent that did not stop cleanly may have left: processes, its route, the volumes."""
    leftovers = NodeCgroups(str(NODE_DIR)).destroy()
    if leftovers:
        print(f"killed {len(leftovers)} container processes the node agent left behind", file=sys.stderr)
    network = NODE_DIR / "network.json"
    if network.exists():
        unroute_range(json.loads(network.read_text())["cidr"])
    shutil.rmtree(NODE_DIR / "pods", ignore_errors=True)  # volumes hold Secrets: not kept after down


def logs(namespace: str, pod: str, container: str | None, previous: bool) -> int:
    """`kubectl logs` from the node's files, which also works once the pod is gone."""
    pod_dirs = sorted((NODE_DIR / "logs").glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime)
    if not pod_dirs:
        print(f"no logs of pod {namespace}/{pod} on this node", file=sys.stderr)
        return 1
    containers = sorted(p.name for p in pod_dirs[-1].iterdir())
    name = container or containers[0]
    files = log_files(pod_dirs[-1] / name)
    if len(files) < (2 if previous else 1):
        print(
            f"no {'previous ' if previous else ''}log of container {name} (has: {containers})",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write((files[-2] if previous else files[-1]).read_text(errors="replace"))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="action", required=True)
    commands.add_parser("up")
    commands.add_parser("down")
    logs_parser = commands.add_parser("logs", help="a container's output, read from the node's files")
    logs_parser.add_argument("pod")
    logs_parser.add_argument("-n", "--namespace", default="default")
    logs_parser.add_argument("-c", "--container")
    logs_parser.add_argument("-p", "--previous", action="store_true")
    args = parser.parse_args()
    if args.action == "up":
        sys.exit(up())
    if args.action == "down":
        sys.exit(down())
    sys.exit(logs(args.namespace, args.pod, args.container, args.previous))


if __name__ == "__main__":
    main()
