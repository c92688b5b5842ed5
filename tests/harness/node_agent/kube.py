"""The node agent's only Kubernetes client: JSON over HTTPS with a client certificate.

The agent needs a handful of calls (get, create, patch, delete and a watch), all from one asyncio loop, so
this is a thin layer over aiohttp, as kopf's own client is, rather than a generated client run in threads.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

Json = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# A request that takes longer than this is a stuck connection, not a slow apiserver.
REQUEST_TIMEOUT = 30.0


class ApiError(Exception):
    """The apiserver answered with an error status; `reason` is the Status reason (NotFound, Conflict...)."""

    def __init__(self, status: int, body: str) -> None:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        self.status = status
        self.reason = str(parsed.get("reason", ""))
        self.message = str(parsed.get("message", body[:500]))
        super().__init__(f"{status} {self.reason}: {self.message}")


# What a call can fail with: an error answer, or no answer (apiserver restarting, connection dropped).
KUBE_ERRORS: tuple[type[Exception], ...] = (ApiError, aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_pem: str
    cert_file: Path
    key_file: Path


def credentials_from_kubeconfig(kubeconfig: Path, scratch: Path) -> Credentials:
    """Reads the current context of a client-certificate kubeconfig; ssl wants the key pair as files."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    scratch.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = scratch / "client.crt", scratch / "client.key"
    cert_file.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key_file.touch(mode=0o600)
    key_file.write_bytes(base64.b64decode(user["client-key-data"]))
    ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
    return Credentials(cluster["server"], ca_pem, cert_file, key_file)


class KubeClient:
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        context = ssl.create_default_context(cadata=credentials.ca_pem)
        context.load_cert_chain(str(credentials.cert_file), str(credentials.key_file))
        self._ssl = context
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env stays off: every server here is on loopback, whatever proxy the shell names.
            self._session = aiohttp.ClientSession(
                base_url=self.credentials.server,
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=64),
                read_bufsize=2**21,  # one watch event is one line: room for a large pod object
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Json | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method,
            path,
            data=data,
            params=params,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(response.status, text)
            return json.loads(text) if text else {}

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Json:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Json) -> Json:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: Json) -> Json:
        return await self.request("PUT", path, body=body)

    async def patch(self, path: str, body: Json, patch_type: str = MERGE_PATCH) -> Json:
        return await self.request("PATCH", path, body=body, content_type=patch_type)

    async def delete(self, path: str, body: Json | None = None) -> Json:
        return await self.request("DELETE", path, body=body)

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[Json]:
        """Yields watch events ({type, object}) until the server ends the watch."""
        query = {**params, "watch": "true", "allowWatchBookmarks": "true"}
        async with self.session.get(
            path,
            params=query,
            # No total timeout: a watch lasts as long as the server's timeoutSeconds.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT),
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, await response.text())
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
