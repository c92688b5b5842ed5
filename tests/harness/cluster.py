"""Start or stop the local control plane by hand (make cluster-up / cluster-down).

make cluster-up            # prints: export KUBECONFIG=...
kubectl get --raw /version
make cluster-down
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from tests.harness.binaries import REPO_ROOT, controlplane_bin_dir
from tests.harness.controlplane import ControlPlane

STATE_DIR = REPO_ROOT / ".local-cluster"
STATE_FILE = STATE_DIR / "state.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def up() -> int:
    if STATE_FILE.exists():
        state = json.loads(STATE_FILE.read_text())
        if all(_alive(pid) for pid in state["pids"].values()):
            print(f"already running\nexport KUBECONFIG={state['kubeconfig']}")
            return 0
        down()
    plane = ControlPlane(STATE_DIR).start()
    pids = {name: proc.pid for name, proc in plane.processes.items()}
    STATE_FILE.write_text(
        json.dumps({"pids": pids, "kubeconfig": str(plane.kubeconfig), "server": plane.server})
    )
    bin_dir = controlplane_bin_dir()
    print(f"control plane up at {plane.server} (logs in {STATE_DIR})")
    print(f"export KUBECONFIG={plane.kubeconfig}")
    print(f'export PATH="{bin_dir}:$PATH"   # kubectl and helm matching the server')
    return 0


def down() -> int:
    if not STATE_FILE.exists():
        print("no local control plane is running")
        return 0
    pids = json.loads(STATE_FILE.read_text())["pids"]
    for name in ("kube-apiserver", "etcd"):
        pid = pids.get(name)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    STATE_FILE.unlink()
    print("control plane stopped")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down"])
    sys.exit(up() if parser.parse_args().action == "up" else down())


if __name__ == "__main__":
    main()
