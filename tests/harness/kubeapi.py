"""A small synchronous JSON client of the apiserver for tests: plain dicts in, plain dicts out.

Tests assert on API objects as the API shows them (camelCase, exactly what `kubectl get -o json`
prints), so this speaks JSON over HTTPS with a client certificate and no model classes. Everything is
on loopback, so no proxy from the environment is used.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Json = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class KubeApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        self.status = status
        self.reason = str(parsed.get("reason", ""))
        self.message = str(parsed.get("message", body[:500]))
        super().__init__(f"{status} {self.reason}: {self.message}")


class KubeApi:
    def __init__(self, server: str, ca_file: Path, cert_file: Path, key_file: Path) -> None:
        self.server = server
        context = ssl.create_default_context(cafile=str(ca_file))
        context.load_cert_chain(str(cert_file), str(key_file))
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def _url(self, path: str, query: dict[str, str] | None) -> str:
        return self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")

    def request(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Json:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is the cluster's own https server
            self._url(path, query), data=data, method=method, headers={"Content-Type": content_type}
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise KubeApiError(exc.code, exc.read().decode(errors="replace")) from exc
        return json.loads(text) if text else {}

    def get(self, path: str, **query: str) -> Json | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", path, query=query or None)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, **query: str) -> list[Json]:
        return list(self.request("GET", path, query=query or None)["items"])

    def create(self, path: str, body: Json) -> Json:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Json, content_type: str = MERGE_PATCH) -> Json:
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str, **options: Any) -> Json | None:
        """Deletes (with DeleteOptions such as propagationPolicy); None when it was not there."""
        try:
            return self.request("DELETE", path, options or None)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def watch(self, path: str, timeout: float, **query: str) -> Iterator[Json]:
        """Watch events ({type, object}) for at most `timeout` seconds (the server closes the watch)."""
        params = {**query, "watch": "true", "timeoutSeconds": str(max(1, int(timeout)))}
        request = urllib.request.Request(self._url(path, params))  # noqa: S310 - see request()
        with self._opener.open(request, timeout=timeout + 10) as response:
            for line in response:
                if line.strip():
                    yield json.loads(line)
