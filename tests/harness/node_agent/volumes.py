"""A pod's volumes: directories under the pod's own directory, bind-mounted into each of its containers.

What each kind becomes:
- emptyDir: an empty directory (mode 0777), kept across container restarts, removed with the pod.
  `medium: Memory` is a plain directory too: a tmpfs would be one more mount to leave behind.
- configMap, secret, downwardAPI, projected: files written by the atomic writer (see atomic_writer),
  read-only in the container, and re-read every REFRESH_INTERVAL so that edits reach running programs.
- a projected serviceAccountToken: minted with the TokenRequest API, bound to the pod, and replaced at
  80% of its lifetime, as the kubelet does. The ServiceAccount admission plugin adds the usual
  kube-api-access volume (token, ca.crt, namespace); `automountServiceAccountToken: false` leaves it out.
- hostPath: the machine's own path.
Other kinds (persistentVolumeClaim, csi, ephemeral, image) fail with a FailedMount reason.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tests.harness.node_agent.atomic_writer import write_atomic
from tests.harness.node_agent.environment import PodContext
from tests.harness.node_agent.fields import FieldError, field_value, resource_value
from tests.harness.node_agent.images import expand
from tests.harness.node_agent.kube import ApiError, KubeClient
from tests.harness.node_agent.objects import ObjectCache

REFRESH_INTERVAL = 1.0  # how soon a ConfigMap or Secret edit reaches a running program, at most
DEFAULT_MODE = 0o644  # the API's default for defaultMode
TOKEN_EXPIRATION = 3600  # the API's default for a projected token's expirationSeconds
_FILE_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")
_KIND_NAMES = {"configmaps": "configmap", "secrets": "secret"}


class MountError(Exception):
    """A volume cannot be set up yet: the kubelet's FailedMount."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(f'MountVolume.SetUp failed for volume "{volume}" : {message}')


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


def hidden_image_dirs(mounts: list[Mount], directories: Iterable[str]) -> list[Mount]:
    """Read-only binds that keep each of an image's directories at its own path where a mount's target
    lies above it (the container's private /tmp over a checkout in /tmp): a volume never hides the
    image's files, as it cannot in a real container, whose image is a filesystem of its own."""
    found = []
    for directory in directories:
        path = PurePosixPath(directory)
        if any(PurePosixPath(m.target) in path.parents for m in mounts):
            found.append(Mount(Path(directory), str(path), read_only=True))
    return found


def token_refresh_delay(expiration_seconds: int) -> float:
    """Seconds after issue when the kubelet replaces a token: 80% of its lifetime, and at least daily."""
    return min(expiration_seconds * 0.8, 24 * 3600.0)


class PodVolumes:
    def __init__(self, kube: KubeClient, cache: ObjectCache, directory: Path) -> None:
        self._kube = kube
        self._cache = cache
        self.directory = directory
        self._tokens: dict[tuple[str, int], tuple[bytes, float]] = {}  # -> (token, refresh at, monotonic)

    async def sync(self, ctx: PodContext) -> None:
        """Creates or refreshes every volume; raises MountError for the first that cannot be set up."""
        group = (ctx.pod["spec"].get("securityContext") or {}).get("fsGroup")
        for volume in ctx.pod["spec"].get("volumes") or []:
            target = self.directory / volume["name"]
            if "emptyDir" in volume:
                if not target.is_dir():
                    target.mkdir(parents=True)
                    target.chmod(0o777)  # any runAsUser may write, as on a real node
                    if group is not None:
                        os.chown(target, -1, group)
            elif "hostPath" in volume:
                _ensure_host_path(volume["name"], volume["hostPath"])
            elif any(kind in volume for kind in _FILE_VOLUMES):
                write_atomic(target, await self._payload(volume, ctx), group=group)
            else:
                kinds = sorted(set(volume) - {"name"})
                raise MountError(volume["name"], f"volume type {kinds} is not supported by the node agent")

    def mounts(self, pod: dict[str, Any], container: dict[str, Any], env: dict[str, str]) -> list[Mount]:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "hostPath" in volume:
                source = Path(volume["hostPath"]["path"])
            else:
                source = self.directory / mount["name"]
            sub_path = mount.get("subPath") or expand(mount.get("subPathExpr", ""), env)
            if sub_path:
                source = source / sub_path
            read_only = bool(mount.get("readOnly")) or any(kind in volume for kind in _FILE_VOLUMES)
            mounts.append(Mount(source, mount["mountPath"], read_only))
        return mounts

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- payloads -----------------------------------------------------------------------------------------

    async def _payload(self, volume: dict[str, Any], ctx: PodContext) -> dict[str, tuple[bytes, int]]:
        name = volume["name"]
        if "configMap" in volume:
            source = volume["configMap"]
            mode = source.get("defaultMode", DEFAULT_MODE)
            return await self._keys(name, ctx, "configmaps", source["name"], source, mode)
        if "secret" in volume:
            source = volume["secret"]
            mode = source.get("defaultMode", DEFAULT_MODE)
            return await self._keys(name, ctx, "secrets", source["secretName"], source, mode)
        if "downwardAPI" in volume:
            source = volume["downwardAPI"]
            return _downward(name, ctx, source.get("items") or [], source.get("defaultMode", DEFAULT_MODE))
        return await self._projected(name, ctx, volume["projected"])

    async def _projected(
        self, name: str, ctx: PodContext, spec: dict[str, Any]
    ) -> dict[str, tuple[bytes, int]]:
        mode = spec.get("defaultMode", DEFAULT_MODE)
        payload: dict[str, tuple[bytes, int]] = {}
        for source in spec.get("sources") or []:
            if "serviceAccountToken" in source:
                token_spec = source["serviceAccountToken"]
                payload[token_spec["path"]] = (await self._token(name, ctx, token_spec), mode)
            elif "configMap" in source:
                ref = source["configMap"]
                payload.update(await self._keys(name, ctx, "configmaps", ref["name"], ref, mode))
            elif "secret" in source:
                ref = source["secret"]
                payload.update(await self._keys(name, ctx, "secrets", ref["name"], ref, mode))
            elif "downwardAPI" in source:
                payload.update(_downward(name, ctx, source["downwardAPI"].get("items") or [], mode))
            else:
                raise MountError(
                    name, f"projected source {sorted(source)} is not supported by the node agent"
                )
        return payload

    async def _keys(
        self, volume: str, ctx: PodContext, kind: str, name: str, source: dict[str, Any], mode: int
    ) -> dict[str, tuple[bytes, int]]:
        data = await self._cache.read(ctx.namespace, kind, name)
        if data is None:
            if source.get("optional"):
                return {}
            raise MountError(volume, f'{_KIND_NAMES[kind]} "{name}" not found')
        items = source.get("items")
        if not items:
            return {key: (value, mode) for key, value in data.items()}
        payload = {}
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise MountError(
                    volume, f"{_KIND_NAMES[kind]} references non-existent config key: {item['key']}"
                )
            payload[item["path"]] = (data[item["key"]], item.get("mode", mode))
        return payload

    async def _token(self, volume: str, ctx: PodContext, spec: dict[str, Any]) -> bytes:
        audience = spec.get("audience", "")
        expiration = int(spec.get("expirationSeconds", TOKEN_EXPIRATION))
        cached = self._tokens.get((audience, expiration))
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        meta = ctx.pod["metadata"]
        account = ctx.pod["spec"].get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        issued = time.monotonic()
        try:
            answer = await self._kube.create(
                f"/api/v1/namespaces/{ctx.namespace}/serviceaccounts/{account}/token", request
            )
        except ApiError as exc:
            raise MountError(volume, f"failed to fetch token: {exc.message}") from exc
        token = str(answer["status"]["token"]).encode()
        self._tokens[(audience, expiration)] = (token, issued + token_refresh_delay(expiration))
        return token


def _downward(
    volume: str, ctx: PodContext, items: list[dict[str, Any]], mode: int
) -> dict[str, tuple[bytes, int]]:
    payload = {}
    for item in items:
        try:
            if "fieldRef" in item:
                value = field_value(ctx.pod, item["fieldRef"]["fieldPath"], ctx.pod_ip, ctx.host_ip)
            else:
                ref = item["resourceFieldRef"]
                value = resource_value(
                    ctx.pod, ref["containerName"], ref["resource"], ref.get("divisor"), ctx.allocatable
                )
        except FieldError as exc:
            raise MountError(volume, str(exc)) from exc
        payload[item["path"]] = (value.encode(), item.get("mode", mode))
    return payload


def _ensure_host_path(volume: str, spec: dict[str, Any]) -> None:
    path, kind = Path(spec["path"]), spec.get("type", "")
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif kind and kind not in ("DirectoryOrCreate", "FileOrCreate") and not path.exists():
        raise MountError(volume, f"hostPath type check failed: {path} does not exist")
