"""A node agent that stands in for the kubelet: it runs the pods bound to its Node as local processes.

There is no container engine on the development machines, so each container becomes an OS process in a
private mount namespace, with its volumes bind-mounted where the pod expects them. Everything the control
plane sees is real: the Node and its Lease, pod status, Events, and TokenRequests for service-account
tokens. It is a harness and development tool, not shipped in any image.

Flow: `agent` watches the pods bound to the node and keeps one `pods.PodWorker` per pod; a worker prepares
the pod (`network`, `volumes`, `hosts`), runs its containers (`containers`, `processes`, `probes`), and
reports status (`status`) through `kube`. `node` registers the Node and renews its Lease. `services`
watches Services and EndpointSlices for the Service names in every pod's /etc/hosts.
"""
