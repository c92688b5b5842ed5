"""Personalised messages: sandboxed templates in, RFC 5322 bytes out, fast and bounded.

Building a message with the standard library's `email` package costs about a
millisecond, more than sending it. `CompiledCampaign.build` writes the same bytes
directly: headers that are constant for a campaign are encoded once, plain ASCII
values are written as they are, and only values that need encoding or folding
go through the standard library's own header classes. `build_reference` is the
plain standard-library construction; tests prove both give identical bytes.

Who is at fault decides the error, and so how the runner counts it:
- `CampaignError` from `CompiledCampaign(wire)`: anything wrong with the campaign
  itself, with a reason a person can act on. Nothing else escapes the constructor.
- `InvalidRecipientError`: this recipient's data cannot be used (wrong types, control
  characters, lone surrogates, a name over MAX_NAME): counted *invalid*.
- `RecipientError` (its base): this recipient's message cannot be built (a template
  error, a size limit, a header that would not be written cleanly): counted *failed*.

`render` and `build` may run in several threads at once: they only read the compiled
campaign (the Date line cache is one tuple, swapped whole), and the sandbox keeps each
render's budget on that render's own Jinja2 context.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from typing import Any, NamedTuple, cast

from jinja2 import Template
from jinja2.runtime import new_context

from mailtrain_sender.bodies import add_part
from mailtrain_sender.headers import (
    MAX_NAME,
    POLICY,
    HeaderLines,
    fold,
    fold_address,
    fold_angle_list,
    line_is_clean,
    name_problem,
    text_problem,
)
from mailtrain_sender.layout import CampaignWire, Recipient
from mailtrain_sender.limits import MAX_VALUE
from mailtrain_sender.wire_checks import CampaignError, CheckedWire

__all__ = [
    "MAX_ADDRESS",
    "MAX_BODY",
    "MAX_NAME",
    "MAX_SUBJECT",
    "MAX_URL",
    "CampaignError",
    "CompiledCampaign",
    "InvalidRecipientError",
    "RecipientError",
    "Rendered",
    "check_recipient",
    "message_date",
]

MAX_ADDRESS = 254  # RFC 5321's path limit; email-validator refuses longer ones too
MAX_SUBJECT = 998  # the rendered subject, characters: what one RFC 5322 line holds (and the CRD's cap)
MAX_BODY = MAX_VALUE  # the rendered text and html bodies, 1 MiB of characters each (the CRD's template cap)
MAX_URL = 900  # the rendered List-Unsubscribe URL: never folded, so it must fit one 998-octet line

_URLSAFE = bytes.maketrans(b"+/", b"-_")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSUB_URL = re.compile(r"(?i:https?)://[\x21-\x2b\x2d-\x3b\x3d\x3f-\x7e]+\Z")  # no space , < > or controls


class RecipientError(ValueError):
    """This recipient's message cannot be built (a template error, a limit): it counts as failed."""


class InvalidRecipientError(RecipientError):
    """This recipient's data is unusable (types, control characters, lengths): it counts as invalid."""


def _has_surrogate(value: object) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return True
        elif isinstance(item, Mapping):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list | tuple):
            pending += item
    return False


def _vars_problem(variables: object) -> str | None:
    if not isinstance(variables, Mapping):
        return f"vars is a {type(variables).__name__}, not a mapping"
    for key, value in variables.items():  # the usual flat mapping of strings, quickly
        if not isinstance(key, str):
            return f"vars has a key that is a {type(key).__name__}, not a string"
        if not key.isascii() and _SURROGATE.search(key):
            return "a vars key contains a lone surrogate (not encodable as UTF-8)"
        if value.__class__ is str:
            if not value.isascii() and _SURROGATE.search(value):
                return f"vars[{key!r}] contains a lone surrogate (not encodable as UTF-8)"
        elif isinstance(value, Mapping | list | tuple) and _has_surrogate(value):
            return f"vars[{key!r}] contains a lone surrogate (not encodable as UTF-8)"
    return None


def check_recipient(r: Recipient) -> Recipient:
    """`r` if its data can be used; InvalidRecipientError with the reason if not. Cheap: call it first."""
    email, name = r.email, r.name
    if not (
        email.__class__ is str
        and len(email) <= MAX_ADDRESS
        and email.isprintable()
        and (name is None or (name.__class__ is str and len(name) <= MAX_NAME and name.isprintable()))
    ):
        _check_name_and_address(r)  # the reason, if there is one (isprintable() is stricter than needed)
    variables = r.vars
    if variables is None:
        return r
    if variables.__class__ is dict:
        for key, value in variables.items():  # the usual flat mapping of ASCII strings, quickly
            if not (key.__class__ is str and key.isascii() and value.__class__ is str and value.isascii()):
                break
        else:
            return r
    if why := _vars_problem(variables):
        raise InvalidRecipientError(why)
    return r


def _check_name_and_address(r: Recipient) -> None:
    if not isinstance(r.email, str):
        raise InvalidRecipientError(f"the address is a {type(r.email).__name__}, not a string")
    if why := name_problem(r.email, MAX_ADDRESS):
        raise InvalidRecipientError(f"the address {why}")
    if r.name is not None:
        if not isinstance(r.name, str):
            raise InvalidRecipientError(f"the name is a {type(r.name).__name__}, not a string")
        if why := name_problem(r.name, MAX_NAME):
            raise InvalidRecipientError(f"the name {why}")


def _render(template: Template, parent: dict[str, Any], limit: int, what: str) -> str:
    # Template.render() rebuilds its context from a ChainMap of globals for
    # every call, which is most of the cost with templates this small; one
    # parent dict shared by the campaign's four templates gives the same output.
    context = new_context(template.environment, template.name, template.blocks, parent, shared=True)
    # Joined before checking: the sandbox's budget bounds what the pieces add up to.
    rendered = "".join(template.root_render_func(context))
    if len(rendered) > limit:
        raise RecipientError(f"{what} is longer than {limit} characters")
    return rendered


def _check_body(body: str, what: str) -> None:
    if "\x00" in body:  # RFC 5322 2.3: no NUL in a body
        raise RecipientError(f"the {what} body contains a NUL character")
    if not body.isascii() and (bad := _SURROGATE.search(body)):
        raise RecipientError(f"the {what} body contains a lone surrogate (U+{ord(bad.group()):04X})")


_date_cache: tuple[int, str] = (0, "")


def message_date() -> str:
    """RFC 5322 Date, computed once per second rather than once per message."""
    # Threads may race here: each computes a correct date and swaps in one tuple (atomic).
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, format_datetime(datetime.fromtimestamp(now, UTC)))
    return _date_cache[1]


class Rendered(NamedTuple):
    """One recipient's message, before it is turned into bytes (a NamedTuple: made 3x faster than a
    frozen dataclass, and as immutable)."""

    to_name: str
    to_email: str
    subject: str
    text: str | None
    html: str | None
    message_id: str
    list_unsubscribe: str | None
    head: bytes = b""  # To to List-Unsubscribe as written, checked; `build` makes them if empty


class CompiledCampaign:
    """A campaign's templates compiled once, and its constant headers encoded and checked once."""

    def __init__(self, wire: CampaignWire) -> None:
        """Raises CampaignError, and nothing else, if the campaign cannot be sent at all."""
        try:
            self._prepare(wire)
        except CampaignError:
            raise
        # A bug, or an input nobody foresaw: still the campaign's end with a reason, never a crash loop.
        except Exception as exc:
            raise CampaignError(f"the campaign cannot be prepared: {type(exc).__name__}: {exc}") from exc

    def _prepare(self, wire: CampaignWire) -> None:
        checks = CheckedWire(wire)
        self.wire = wire
        self._subject, self._text, self._html = checks.subject, checks.text, checks.html
        self._unsub_url = checks.unsubscribe_url
        self._mailto_item = f"<mailto:{checks.unsubscribe_mailto}>" if checks.unsubscribe_mailto else ""
        self._globals: dict[str, Any] = dict(self._subject.globals)
        self._token_key = wire.token_key.encode()
        self.domain = wire.sender.address.rpartition("@")[2]
        self.sender = Address(wire.sender.name or "", addr_spec=wire.sender.address)
        self.boundary = "mt_" + hashlib.sha256(wire.id.encode()).hexdigest()[:16]
        b = self.boundary.encode()
        self._multipart = (  # before the text part, between the parts, after the html part
            b'Content-Type: multipart/alternative; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n",
            b"\r\n--" + b + b"\r\n",
            b"\r\n--" + b + b"--\r\n",
        )
        self._from_line = checks.from_line
        self._trailing = checks.trailing
        self._tail = checks.trailing_lines + b"MIME-Version: 1.0\r\n"
        self._varying_lines: HeaderLines = checks.varying_lines
        self._date_line: tuple[str, bytes] = ("", b"")

    @property
    def envelope_sender(self) -> str:
        """The address for MAIL FROM: from.address, checked to be a valid ASCII address."""
        return self.wire.sender.address

    def token(self, email_address: str) -> str:
        """The recipient's unsubscribe token: a keyed BLAKE2b MAC of the address."""
        digest = hashlib.blake2b(email_address.lower().encode(), key=self._token_key, digest_size=16).digest()
        # base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), in fewer steps: 16 bytes end in "=="
        return binascii.b2a_base64(digest, newline=False)[:-2].translate(_URLSAFE).decode()

    def render(self, recipient: Recipient, index: int) -> Rendered:
        """The recipient's message; raises RecipientError (InvalidRecipientError for bad data)."""
        recipient = check_recipient(recipient)
        token = self.token(recipient.email)
        parent = self._globals.copy()
        if recipient.vars:
            parent.update(recipient.vars)
        parent["email"] = recipient.email
        parent["name"] = recipient.name or ""
        parent["vars"] = recipient.vars or {}
        parent["token"] = token
        try:
            subject = _render(self._subject, parent, MAX_SUBJECT, "the subject")
            text = _render(self._text, parent, MAX_BODY, "the text body") if self._text else None
            html = _render(self._html, parent, MAX_BODY, "the html body") if self._html else None
            url = (
                _render(self._unsub_url, parent, MAX_URL, "the List-Unsubscribe URL")
                if self._unsub_url
                else None
            )
        except RecipientError:
            raise
        except Exception as exc:  # a template can raise anything a sandboxed expression can
            raise RecipientError(f"template error: {type(exc).__name__}: {exc}") from exc
        # The quick tests first: isprintable() and isascii() are true for nearly every message.
        if not subject.isprintable() and (why := text_problem(subject, MAX_SUBJECT)):
            raise RecipientError(f"the subject {why}")
        if text is not None and ("\x00" in text or not text.isascii()):
            _check_body(text, "text")
        if html is not None and ("\x00" in html or not html.isascii()):
            _check_body(html, "html")
        message_id = f"<{self.wire.id}.{index}@{self.domain}>"
        unsub = self._list_unsubscribe(url)
        name = recipient.name or ""
        head = self._head(name, recipient.email, subject, message_id, unsub)
        return Rendered(name, recipient.email, subject, text, html, message_id, unsub, head)

    def _list_unsubscribe(self, url: str | None) -> str | None:
        if url is None:
            return self._mailto_item or None
        if not _UNSUB_URL.match(url):
            raise RecipientError(f"the List-Unsubscribe URL {url!r:.100} is not one http(s) URL")
        return f"<{url}>{self._mailto_item and ', '}{self._mailto_item}"

    def _head(self, name: str, email: str, subject: str, message_id: str, unsub: str | None) -> bytes:
        """The header lines that differ per message, folded, and checked as bytes (headers.py says why)."""
        try:
            to_line = fold_address("To", name, email)
        except Exception as exc:
            raise InvalidRecipientError(f"the name or address cannot be written: {exc}") from exc
        try:
            subject_line = fold("Subject", subject)
            unsub_line = fold_angle_list("List-Unsubscribe", unsub.split(", ")) if unsub else b""
            head = b"".join((to_line, subject_line, fold("Message-ID", message_id), unsub_line))
        except Exception as exc:
            raise RecipientError(f"the headers cannot be written: {type(exc).__name__}: {exc}") from exc
        if not self._varying_lines.match(head):
            if not line_is_clean("To", to_line):
                raise InvalidRecipientError(
                    f"the name or address would be more than one To header: {to_line!r:.200}"
                )
            for field, line in (("Subject", subject_line), ("List-Unsubscribe", unsub_line)):
                if line and not line_is_clean(field, line):
                    raise RecipientError(f"the {field} header would not be one clean header: {line!r:.200}")
            raise RecipientError(f"the header lines would not be the expected ones: {head!r:.300}")
        return head

    def build(self, r: Rendered, date: str) -> bytes:
        """The message bytes, written directly (the hot path). Raises RecipientError only for a date
        that cannot be a Date header, or a Rendered that `render` did not make."""
        head = r.head or self._head(r.to_name, r.to_email, r.subject, r.message_id, r.list_unsubscribe)
        parts = [self._from_line, self._date(date), head, self._tail]
        try:
            self._add_body(parts, r)
        except Exception as exc:
            raise RecipientError(f"the body cannot be written: {type(exc).__name__}: {exc}") from exc
        return b"".join(parts)

    def _date(self, date: str) -> bytes:
        # One Date line per second; threads may race on it harmlessly (one tuple, swapped whole).
        cached = self._date_line
        if cached[0] != date:
            line = fold("Date", date) if date.isascii() and date.isprintable() else b""
            if not line_is_clean("Date", line):
                raise RecipientError(f"{date!r:.100} cannot be a Date header")
            cached = self._date_line = (date, line)
        return cached[1]

    def _add_body(self, parts: list[bytes], r: Rendered) -> None:
        """Content-Type onwards: the header lines about the body, the empty line, the body."""
        if r.text is not None and r.html is not None:
            parts.append(self._multipart[0])
            add_part(parts, "plain", r.text)
            parts.append(self._multipart[1])
            add_part(parts, "html", r.html)
            parts.append(self._multipart[2])
        elif r.text is not None:
            add_part(parts, "plain", r.text)
        else:
            add_part(parts, "html", r.html or "")

    def build_reference(self, r: Rendered, date: str) -> bytes:
        """The same message built with the standard library's email package (slow; the reference)."""
        msg = EmailMessage(policy=POLICY)
        msg["From"] = self.sender
        msg["Date"] = date
        msg["To"] = Address(r.to_name, addr_spec=r.to_email)
        msg["Subject"] = r.subject
        msg["Message-ID"] = r.message_id
        if r.list_unsubscribe:
            msg["List-Unsubscribe"] = r.list_unsubscribe
        for name, value in self._trailing:
            msg[name] = value
        msg["MIME-Version"] = "1.0"
        if r.text is not None and r.html is not None:
            msg.make_alternative()
            for body, subtype in ((r.text, "plain"), (r.html, "html")):
                part = MIMEPart(policy=POLICY)
                part.set_content(body, subtype=subtype)
                msg.attach(cast(EmailMessage, part))  # typeshed wants EmailMessage; MIMEPart is right
            msg.set_boundary(self.boundary)
        else:
            msg.set_content(
                r.text if r.text is not None else (r.html or ""),
                subtype="plain" if r.text is not None else "html",
            )
        return msg.as_bytes()
