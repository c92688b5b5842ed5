"""A campaign's wire format, checked: everything the sender refuses to take on trust from the CRD.

Where it sits: `render.CompiledCampaign` builds a `CheckedWire` once per campaign. The
wire format is a contract between the operator and the senders, so the sender
checks it itself; whatever passes here can be sent, and whatever fails raises
CampaignError with a reason a person can act on (the campaign stops; no
recipient is burnt on it).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from jinja2 import Template
from jinja2.nodes import EvalContext
from jinja2.utils import pass_eval_context

from mailtrain_sender.addresses import InvalidAddressError, ascii_address
from mailtrain_sender.headers import (
    FIELD_NAME,
    MAX_NAME,
    HeaderLines,
    fold,
    fold_address,
    fold_angle_list,
    line_is_clean,
    name_problem,
    text_problem,
)
from mailtrain_sender.layout import CampaignWire
from mailtrain_sender.sandbox import BoundedEnvironment, charge_printed

RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "List-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Sender",
        "Return-Path",
    )
)
MAX_HEADERS = 50  # extra headers (the CRD's cap)
MAX_HEADER_VALUE = 998  # characters of an extra header's value (the CRD's cap)
MAX_FIELD_NAME = 76  # a field name cannot be folded; with ": " it then fills a 78-column line
MAX_LIST_ID = 255  # RFC 2919 section 3, the part between < and >
MAX_ID = 128  # the campaign id (a Kubernetes uid has 36 characters): it is in every Message-ID
# Template sources (the CRD's caps), and tags per template: compiling costs about 80 µs per tag here,
# so 5,000 keep a campaign's compile under half a second; real templates have a few hundred.
MAX_TEMPLATE = {"subject": 998, "text": 1 << 20, "html": 1 << 20, "listUnsubscribe.url": 2048}
MAX_TAGS = 5000

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_LIST_ID = re.compile(rf"<{_ATEXT}+(?:\.{_ATEXT}+)+>\Z")  # list-label "." namespace, RFC 2919
_URL_START = re.compile(r"(?i:https?)://")
_URL_COMPONENT = re.compile(r"[A-Za-z0-9_.~-]*\Z")


class CampaignError(ValueError):
    """The campaign cannot be sent at all (a template does not compile, a reserved header, a bad address)."""


@pass_eval_context
def url_component(eval_ctx: EvalContext, value: object) -> str:
    """Every {{ }} of the List-Unsubscribe URL is printed percent-encoded: data cannot add a second URL."""
    if value.__class__ is str:
        text: str = value
    else:
        charge_printed(eval_ctx, value)
        text = str(value)
    return text if _URL_COMPONENT.match(text) else quote(text, safe="")


class CheckedWire:
    """The checked campaign: its compiled templates, and its constant header lines already folded."""

    def __init__(self, wire: CampaignWire) -> None:
        _check_identity(wire)
        self.unsubscribe_mailto = _check_list_headers(wire)
        text_env = BoundedEnvironment(autoescape=False)
        html_env = BoundedEnvironment(autoescape=True)
        url_env = BoundedEnvironment(autoescape=False, finalize=url_component)
        unsub = wire.list_unsubscribe
        self.subject: Template = _compile(text_env, "subject", wire.subject)
        self.text = _compile(text_env, "text", wire.text) if wire.text is not None else None
        self.html = _compile(html_env, "html", wire.html) if wire.html is not None else None
        self.unsubscribe_url = (
            _compile(url_env, "listUnsubscribe.url", unsub.url) if unsub and unsub.url else None
        )
        self.from_line = _clean("From", fold_address("From", wire.sender.name or "", wire.sender.address))
        # Written after the per-message lines, in this order (build_reference follows it too).
        self.trailing: list[tuple[str, str]] = []
        if unsub and unsub.one_click:
            self.trailing.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        if wire.list_id:
            self.trailing.append(("List-ID", wire.list_id))
        self.trailing += wire.headers.items()
        self.trailing_lines = b"".join(
            _clean(name, fold_angle_list(name, [value]) if name == "List-ID" else fold(name, value))
            for name, value in self.trailing
        )
        # The lines that differ per message (From and Date come before them), checked on every
        # message's bytes (headers.py says why).
        varying = ["To", "Subject", "Message-ID"] + (["List-Unsubscribe"] if unsub else [])
        self.varying_lines = HeaderLines(varying)


def _check_identity(wire: CampaignWire) -> None:
    if len(wire.id) > MAX_ID or not _DOT_ATOM.match(wire.id):
        raise CampaignError(f"the campaign id {wire.id!r:.80} cannot be part of a Message-ID")
    try:
        ascii_address(wire.sender.address)
    except InvalidAddressError as exc:
        raise CampaignError(f"from.address {wire.sender.address!r:.300} cannot be sent from: {exc}") from exc
    if wire.sender.name is not None and (why := name_problem(wire.sender.name, MAX_NAME)):
        raise CampaignError(f"from.name {why}")
    if len(wire.headers) > MAX_HEADERS:
        raise CampaignError(f"more than {MAX_HEADERS} extra headers")
    for name, value in wire.headers.items():
        if not FIELD_NAME.match(name) or len(name) > MAX_FIELD_NAME:
            raise CampaignError(
                f"header name {name!r:.100} is not an RFC 5322 field name of at most {MAX_FIELD_NAME} "
                "printable ASCII characters without spaces or ':'"
            )
        if name.lower() in RESERVED_HEADERS:
            raise CampaignError(f"header {name} is set by the sender and cannot be overridden")
        if why := text_problem(value, MAX_HEADER_VALUE):
            raise CampaignError(f"header {name} {why}")


def _check_list_headers(wire: CampaignWire) -> str | None:
    """Checks listId and listUnsubscribe; returns the mailto address, if any."""
    if wire.list_id is not None and (len(wire.list_id) > MAX_LIST_ID + 2 or not _LIST_ID.match(wire.list_id)):
        raise CampaignError(f"listId {wire.list_id!r:.300} is not of the form <label.domain> (RFC 2919)")
    unsub = wire.list_unsubscribe
    if unsub is None:
        return None
    if not unsub.url and not unsub.mailto:
        raise CampaignError("listUnsubscribe needs url or mailto")
    if unsub.url is not None and not _URL_START.match(unsub.url):
        raise CampaignError("listUnsubscribe.url must start with https:// (or http://)")
    if unsub.one_click and not (unsub.url and unsub.url[:8].lower() == "https://"):
        raise CampaignError("listUnsubscribe.oneClick needs an https url (RFC 8058)")
    if unsub.mailto is None:
        return None
    try:
        return ascii_address(unsub.mailto)
    except InvalidAddressError as exc:
        raise CampaignError(f"listUnsubscribe.mailto {unsub.mailto!r:.300} is not an address: {exc}") from exc


def _compile(env: BoundedEnvironment, field: str, source: str) -> Template:
    if len(source) > MAX_TEMPLATE[field]:
        raise CampaignError(f"{field} is longer than {MAX_TEMPLATE[field]} characters")
    tags = source.count("{{") + source.count("{%") + source.count("{#")
    if tags > MAX_TAGS:
        raise CampaignError(f"{field} has {tags} template tags; at most {MAX_TAGS} are allowed")
    if bad := re.search("[\ud800-\udfff]", source):
        raise CampaignError(f"{field} contains a lone surrogate (U+{ord(bad.group()):04X})")
    try:
        return env.compile_template(source)
    except Exception as exc:  # TemplateSyntaxError, or RecursionError for deep nesting
        raise CampaignError(f"{field}: template does not compile: {type(exc).__name__}: {exc}") from exc


def _clean(name: str, line: bytes) -> bytes:
    if not line_is_clean(name, line):
        raise CampaignError(f"header {name} would not be written as one clean header line: {line!r:.200}")
    return line
