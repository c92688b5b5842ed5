"""The one error a recipients source raises: the whole list cannot be used, and a person must act."""

from __future__ import annotations

# Reasons (CamelCase, for a condition's `reason`); the message says what to fix. A Secret source
# is read by kube.read_secret_key, whose reasons are SecretNotFound, SecretForbidden,
# SecretKeyNotFound and SecretKeyNotText (the same as for a pool's Secrets).
CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
CONFIG_MAP_FORBIDDEN = "ConfigMapForbidden"
CONFIG_MAP_KEY_NOT_FOUND = "ConfigMapKeyNotFound"
URL_UNREACHABLE = "UrlUnreachable"
BAD_URL = "BadUrl"
BAD_HEADER = "BadHeader"
NOT_UTF8 = "NotUtf8"
SOURCE_TOO_LARGE = "SourceTooLarge"
TOO_MANY_RECIPIENTS = "TooManyRecipients"


class SourceError(Exception):
    """The list as a whole cannot be read. `reason` is CamelCase for a condition, `message` one line
    for a person, saying what to fix. `temporary` is True when the same spec may work on a later try
    without anyone changing anything (a server that did not answer, or answered 5xx or 429)."""

    def __init__(self, reason: str, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.temporary = temporary

    def __repr__(self) -> str:
        return f"SourceError({self.reason!r}, {self.message!r}, temporary={self.temporary})"
