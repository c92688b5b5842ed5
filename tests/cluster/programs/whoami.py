"""An in-cluster client: lists pods in its own namespace every half second and prints the HTTP status.

It uses the standard in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT and the mounted token), so
it proves that a pod's projected token authenticates as its ServiceAccount.
"""

import time

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

config.load_incluster_config()  # type: ignore[no-untyped-call]
with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
    namespace = f.read()
api = client.CoreV1Api()
while True:
    try:
        api.list_namespaced_pod(namespace)
        print("status 200", flush=True)
    except ApiException as exc:
        print(f"status {exc.status}", flush=True)
    time.sleep(0.5)
