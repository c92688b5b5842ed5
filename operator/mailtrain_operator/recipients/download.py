"""A `recipients.url` list, streamed over http(s) with aiohttp: never the whole body in memory.

- `idle_seconds` is seconds without a byte (connecting, waiting for the answer, or between two
  pieces of the body), not a limit on the whole download: a million rows may take minutes.
- Redirects are followed, at most MAX_REDIRECTS, and only to http(s).
- gzip and deflate bodies (Content-Encoding) are undone by aiohttp; the size limit counts the
  bytes after that, so a small compressed body cannot unpack into an unbounded list.
- No proxy or .netrc from the environment is used (aiohttp's `trust_env=False`).
- Messages name the URL without its user information and query (where tokens usually are), so
  a pre-signed URL does not end up in a condition, an Event or a log.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from yarl import URL

from mailtrain_operator.recipients.errors import BAD_URL, SOURCE_TOO_LARGE, URL_UNREACHABLE, SourceError

MAX_REDIRECTS = 10
PIECE_BYTES = 65_536
_TIMEOUT_SETTING = "MAILTRAIN_OPERATOR_RECIPIENTS_URL_TIMEOUT"


def shown(url: URL) -> str:
    """The URL as messages show it: scheme, host, port and path only."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


def _url(href: str) -> URL:
    try:
        url = URL(href)
    except ValueError:
        raise SourceError(BAD_URL, "recipients.url.href is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise SourceError(BAD_URL, "recipients.url.href must be an http:// or https:// URL with a host")
    return url


def _unreachable(url: URL, exc: BaseException, idle_seconds: float) -> SourceError:
    """What went wrong, in words that quote neither the URL's query nor a redirect's target."""
    where = shown(url)
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError and SocketTimeoutError are ones
        why = f"{where} sent nothing for {idle_seconds:g} s ({_TIMEOUT_SETTING})"
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError):
        why = f"the TLS certificate of {url.host} is not trusted: {exc.certificate_error}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        # asyncio words a refusal as "Connect call failed ('10.0.0.1', 80)": say what it means.
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        cause = "connection refused" if refused else exc.os_error.strerror or type(exc.os_error).__name__
        why = f"cannot connect to {url.host}:{url.port}: {cause}"
    elif isinstance(exc, aiohttp.TooManyRedirects):
        why = f"{where} redirects more than {MAX_REDIRECTS} times"
    elif isinstance(exc, aiohttp.RedirectClientError):
        why = f"{where} redirects to a URL that is not http(s)"
    elif isinstance(exc, ssl.SSLError | aiohttp.ClientSSLError):
        why = f"TLS with {url.host} failed: {type(exc).__name__}"
    else:  # a connection dropped or reset, a malformed answer or body
        why = f"the download of {where} broke off ({type(exc).__name__})"
    return SourceError(URL_UNREACHABLE, why, temporary=True)


@asynccontextmanager
async def download(href: str, idle_seconds: float, max_bytes: int) -> AsyncIterator[AsyncIterator[bytes]]:
    """Connect and check the answer (SourceError if it is not a 2xx); then the body, in pieces."""
    url = _url(href)
    limits = aiohttp.ClientTimeout(total=None, sock_connect=idle_seconds, sock_read=idle_seconds)
    async with aiohttp.ClientSession(timeout=limits, trust_env=False) as session:
        try:
            response = await session.get(url, max_redirects=MAX_REDIRECTS)
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise _unreachable(url, exc, idle_seconds) from None
        async with response:
            if response.status >= 400:
                raise SourceError(
                    URL_UNREACHABLE,
                    f"{shown(url)} answered {response.status} {response.reason or ''}".rstrip(),
                    temporary=response.status >= 500 or response.status in (408, 429),
                )
            length = response.content_length
            if length is not None and length > max_bytes and not response.headers.get("Content-Encoding"):
                raise SourceError(
                    SOURCE_TOO_LARGE,
                    f"{shown(url)} is {length:,} bytes, more than the {max_bytes:,} a list may have",
                )
            yield _body(response, url, idle_seconds)


async def _body(
    response: aiohttp.ClientResponse, url: URL, idle_seconds: float
) -> AsyncGenerator[bytes, None]:
    try:
        async for piece in response.content.iter_chunked(PIECE_BYTES):
            yield piece
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
        raise _unreachable(url, exc, idle_seconds) from None
