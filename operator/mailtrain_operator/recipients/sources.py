"""Where a campaign's list comes from: inline, a ConfigMap key, a Secret key, or a URL.

The ConfigMap and the Secret are read with `get` on the one object the spec names (the
operator may not list or watch them). A ConfigMap key is looked up in `data`, then in
`binaryData`: `kubectl create configmap --from-file` puts a file that is not UTF-8 there, and
reading it gives the person the line that is not UTF-8 instead of "no such key".
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from kubernetes.client.exceptions import ApiException

from mailtrain_operator import kube
from mailtrain_operator.api.mailcampaign import KeyRef, ListFormat, Recipients, UrlSource
from mailtrain_operator.recipients.download import download
from mailtrain_operator.recipients.errors import (
    CONFIG_MAP_FORBIDDEN,
    CONFIG_MAP_KEY_NOT_FOUND,
    CONFIG_MAP_NOT_FOUND,
    SourceError,
)
from mailtrain_operator.recipients.rows import CsvRows, JsonlRows, inline_rows
from mailtrain_operator.recipients.stream import (
    Limits,
    Parser,
    RecipientStream,
    in_chunks,
    parse_bytes,
    rows_once,
)
from mailtrain_operator.settings import OperatorSettings, variable

_MAX_BYTES = variable("recipients_max_bytes")
_MAX_COUNT = variable("recipients_max_count")


def parser(list_format: ListFormat) -> Parser:
    return CsvRows() if list_format == "csv" else JsonlRows()


@asynccontextmanager
async def open_source(
    namespace: str, recipients: Recipients, settings: OperatorSettings
) -> AsyncIterator[RecipientStream]:
    """The campaign's recipients as a stream, open until the block ends.

    Raises SourceError when the source cannot be opened (a missing object or key, a URL that
    does not answer 2xx); the stream raises it later for what only reading shows (a header
    without email, bytes that are not UTF-8, a broken download, a limit). Other apiserver errors
    (5xx, connection) propagate as kubernetes ApiException: nothing for a person to fix, retry.
    """
    kind, source = recipients.source
    limits = Limits(settings.recipients_max_bytes, settings.recipients_max_count)
    async with AsyncExitStack() as stack:
        if isinstance(source, list):
            rows = inline_rows((item.email, item.name, item.vars) for item in source)
            batches = rows_once(rows)
        elif isinstance(source, UrlSource):
            body = await stack.enter_async_context(
                download(source.href, settings.recipients_url_timeout, settings.recipients_max_bytes)
            )
            batches = parse_bytes(body, parser(source.format), limits.max_bytes, _MAX_BYTES)
        else:
            read = _config_map_value if kind == "configMapRef" else _secret_value
            data = await read(namespace, source)
            batches = parse_bytes(in_chunks(data), parser(source.format), limits.max_bytes, _MAX_BYTES)
        stream = RecipientStream(batches, limits, _MAX_COUNT)
        stack.push_async_callback(stream.aclose)  # before the download closes: the parser stops first
        yield stream


async def _config_map_value(namespace: str, ref: KeyRef) -> bytes:
    what = f"ConfigMap {namespace}/{ref.name} (recipients.configMapRef)"
    try:
        config_map = await kube.call(kube.core().read_namespaced_config_map, ref.name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise SourceError(CONFIG_MAP_NOT_FOUND, f"{what} does not exist") from None
        if exc.status == 403:
            raise SourceError(
                CONFIG_MAP_FORBIDDEN, f"the operator may not read {what}: check its RBAC scope"
            ) from None
        raise
    text = (config_map.data or {}).get(ref.key)
    if text is not None:
        return str(text).encode()
    binary = (config_map.binary_data or {}).get(ref.key)
    if binary is not None:
        return base64.b64decode(binary)
    raise SourceError(CONFIG_MAP_KEY_NOT_FOUND, f"{what} has no key {ref.key!r}")


async def _secret_value(namespace: str, ref: KeyRef) -> bytes:
    try:
        text = await kube.read_secret_key(namespace, ref.name, ref.key, purpose="recipients.secretRef")
    except kube.MissingReference as exc:
        raise SourceError(exc.reason, exc.message) from None
    return text.encode()
