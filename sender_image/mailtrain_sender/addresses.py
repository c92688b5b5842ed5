"""Recipient address validation: email-validator's verdict, without its cost on every message.

email-validator checks the domain character by character (IDNA, UTS #46), which
costs more than rendering the message. A campaign has few distinct domains, so
the domain's verdict is cached; a plain ASCII dot-atom local part is checked by
a regex equivalent to email-validator's. Anything unusual (quoted local parts,
non-ASCII, odd lengths) goes to email-validator itself. Tests compare both on a
corpus of valid and invalid addresses.

`ascii_address` checks the addresses a campaign sends *from* (from.address, the
List-Unsubscribe mailto): they are written into headers and MAIL FROM exactly as
given, and this sender does not use SMTPUTF8, so they must be ASCII as well.
"""

from __future__ import annotations

import functools
import re

from email_validator import EmailNotValidError, validate_email

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_MAX_LOCAL, _MAX_ADDRESS = 64, 254
# Longer than any address email-validator could accept (254 octets, even if every character
# were escaped); refused without calling it, so a huge value costs nothing.
_HOPELESS = 4 * _MAX_ADDRESS


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


def normalize(address: object) -> str:
    """The address to send to, in ASCII; raises InvalidAddressError with email-validator's reason."""
    if not isinstance(address, str):
        raise InvalidAddressError(f"the address is a {type(address).__name__}, not a string")
    if len(address) > _HOPELESS:
        raise InvalidAddressError(f"The email address is too long ({len(address)} characters).")
    local, at, domain = address.rpartition("@")
    if not at or len(local) > _MAX_LOCAL or len(address) > _MAX_ADDRESS or not _PLAIN_LOCAL.match(local):
        return _full(address)
    checked = _domain(domain)
    if isinstance(checked, InvalidAddressError):
        raise checked
    normalized = f"{local}@{checked}"
    return normalized if len(normalized) <= _MAX_ADDRESS else _full(address)


def ascii_address(address: str) -> str:
    """`address` itself if it is a valid address written in ASCII; raises InvalidAddressError why not."""
    if not address.isascii():
        raise InvalidAddressError(
            "it is not ASCII; this sender does not use SMTPUTF8, so write the domain in its xn-- form "
            "and use an ASCII local part"
        )
    normalize(address)
    return address
