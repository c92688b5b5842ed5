"""Recipient address validation: email-validator's verdict, without its cost on every message.

email-validator checks the domain character by character (IDNA, UTS #46), which
costs more than rendering the message. A campaign has few distinct domains, so
the domain's verdict is cached; a plain ASCII dot-atom local part is checked by
a regex equivalent to email-validator's. Anything unusual (quoted local parts,
non-ASCII, odd lengths) goes to email-validator itself. Tests compare both on a
corpus of valid and invalid addresses.
"""

from __future__ import annotations

import functools
import re

from email_validator import EmailNotValidError, validate_email

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_MAX_LOCAL, _MAX_ADDRESS = 64, 254


class InvalidAddressError(ValueError):
    pass


def _full(address: str) -> str:
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddressError(str(exc)) from exc
    return result.ascii_email or result.normalized


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> str | InvalidAddressError:
    """The normalised ASCII domain, or why it is not valid (both cached)."""
    try:
        return _full(f"x@{domain}").rpartition("@")[2]
    except InvalidAddressError as exc:
        return exc


def normalize(address: str) -> str:
    """The address to send to, in ASCII; raises InvalidAddressError with email-validator's reason."""
    local, at, domain = address.rpartition("@")
    if not at or len(local) > _MAX_LOCAL or len(address) > _MAX_ADDRESS or not _PLAIN_LOCAL.match(local):
        return _full(address)
    checked = _domain(domain)
    if isinstance(checked, InvalidAddressError):
        raise checked
    normalized = f"{local}@{checked}"
    return normalized if len(normalized) <= _MAX_ADDRESS else _full(address)
