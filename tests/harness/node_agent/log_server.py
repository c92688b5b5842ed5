"""The part of the kubelet's API that `kubectl logs` uses: GET /containerLogs/<namespace>/<pod>/<container>.

The apiserver connects to the node's InternalIP and daemonEndpoints port with its kubelet client
certificate and checks this server's certificate against the cluster CA. Here any client certificate
signed by that CA is accepted; a kubelet would also ask the apiserver (SubjectAccessReview) whether that
client may read logs. Supported query parameters: follow, previous, tailLines, limitBytes. exec,
attach and port-forward are not served.

Each container's output is in <root>/logs/<namespace>_<pod>_<uid>/<container>/<restartCount>.log, as
the kubelet keeps it under /var/log/pods.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiohttp import web

from tests.harness.node_agent.logfiles import log_files

FOLLOW_POLL = 0.2


@dataclass(frozen=True)
class ServingIdentity:
    cert_file: Path
    key_file: Path
    client_ca_file: Path


@dataclass(frozen=True)
class ContainerLogs:
    directory: Path  # <root>/logs/<namespace>_<pod>_<uid>/<container>
    running: Callable[[], bool]


def tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class LogServer:
    def __init__(self, find: Callable[[str, str, str], ContainerLogs | None]) -> None:
        self._find = find
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, identity: ServingIdentity) -> int:
        """Listens on a free port of host; returns the port, which the Node then advertises."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(identity.client_ca_file))
        context.load_cert_chain(str(identity.cert_file), str(identity.key_file))
        context.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_route("*", "/{kind:exec|attach|portForward|run}/{rest:.*}", _not_served)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))  # a free port, which the Node then advertises
        await web.SockSite(self._runner, sock, ssl_context=context).start()
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        found = self._find(info["namespace"], info["pod"], info["container"])
        if found is None:
            raise web.HTTPNotFound(
                text=f"container {info['container']} of pod {info['pod']} is not on this node"
            )
        files = log_files(found.directory)
        previous = request.query.get("previous") == "true"
        if not files or (previous and len(files) < 2):
            raise web.HTTPBadRequest(text=f"previous terminated container {info['container']} not found")
        path = files[-2] if previous else files[-1]
        with path.open("rb") as stream:  # one stream: what follow sends starts where the rest ended
            data = stream.read()
            if "tailLines" in request.query:
                data = tail(data, int(request.query["tailLines"]))
            if "limitBytes" in request.query:
                data = data[: int(request.query["limitBytes"])]
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            await response.write(data)
            try:
                if request.query.get("follow") == "true" and not previous:
                    await self._follow(request, response, stream, path, found)
                await response.write_eof()
            except ConnectionResetError:  # the client went away (kubectl logs -f interrupted)
                pass
        return response

    async def _follow(
        self,
        request: web.Request,
        response: web.StreamResponse,
        stream: BinaryIO,
        path: Path,
        found: ContainerLogs,
    ) -> None:
        """Streams what the container writes, until it stops running (as the kubelet's follow ends) or
        the client goes away."""
        while request.transport is not None and not request.transport.is_closing():
            chunk = stream.read(65536)
            if chunk:
                await response.write(chunk)
                continue
            if not found.running() or log_files(found.directory)[-1] != path:
                return
            await asyncio.sleep(FOLLOW_POLL)


async def _not_served(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotImplemented(
        text=f"the node agent serves only container logs, not {request.match_info['kind']}: a container is a "
        "plain process here, so run what you need on the machine itself"
    )
