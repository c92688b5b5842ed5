"""HTTP endpoints of a sender pod: /metrics for Prometheus, /healthz and /readyz for probes.

healthz: the event loop answers (a wedged loop cannot). readyz: the process has
reached Redis within one lease TTL and is not shutting down.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailtrain_sender.worker import Worker


def application(worker: Worker) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(worker.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if worker.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: Redis not reached recently, or shutting down\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(worker: Worker, listen: str) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(application(worker), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()  # noqa: S104 (scraped in-cluster)
    return runner
