"""SenderPool → its child objects, kept in step, and the pool's status. kopf handlers call these
(`handlers/pool.py`); nothing here imports kopf.

    names.py         object names, labels, ports and paths the children share
    sender_toml.py   sender.toml, built and judged by the sender's own config model (pure)
    pod_template.py  the sender pods: security, probes, env from Secrets, the private Redis (pure)
    builders.py      Deployment, ConfigMap, Service, the private Redis's Secret (pure)
    drift.py         whether an object still holds what the operator applied (pure)
    apply.py         server-side apply of the children, and the private Redis's Secret
    status.py        the pool's status and conditions from what was observed (pure)
    observe.py       what the status needs: the Deployment, its pods, the pool's Redis
    tracking.py      per pool, in memory: the generation handled and waking its status loop
    status_loop.py   the one writer of a pool's status: observe, build, write what changed
"""
