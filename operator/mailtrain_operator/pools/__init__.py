"""SenderPool → its child objects, and the pool's status. Nothing here imports kopf.

    names.py         object names, labels, ports and paths the children share
    sender_toml.py   sender.toml, built and judged by the sender's own config model (pure)
    pod_template.py  the sender pods: security, probes, env from Secrets, the private Redis (pure)
    builders.py      Deployment, ConfigMap, Service, the private Redis's Secret (pure)
    drift.py         whether an object still holds what the operator applied (pure)
    status.py        the pool's status and conditions from what was observed (pure)
"""
