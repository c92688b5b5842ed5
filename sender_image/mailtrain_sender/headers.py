"""Header lines: what a value may hold, how it is folded, and a check of the bytes actually written.

Where it sits: render.py checks a campaign's constant headers here once, and every
message's header block before the message leaves. Nothing here knows campaigns.

Why checking the input is not enough: the standard library folds a header by
parsing it first, and its parser decodes RFC 2047 encoded words. On the Python of
this venv (3.11.7, CVE-2024-6923) a subject or display name holding
`=?utf-8?q?a=0D=0ABcc:_x@evil.example?=` is written as a second, raw `Bcc:`
header, and `=?utf-8?q?=00?=` writes a NUL byte on every version. So
`HeaderLines` checks the bytes: they must be exactly the expected fields,
in order, each line at most 998 octets of printable ASCII or HTAB, and
render.py runs it on the bytes of every message.
"""

from __future__ import annotations

import email.policy
import functools
import re
from collections.abc import Sequence
from email.headerregistry import Address

# 7bit: non-ASCII bodies are quoted-printable or base64, so no relay needs 8BITMIME.
POLICY = email.policy.SMTP.clone(cte_type="7bit")
MAX_LINE = POLICY.max_line_length or 78
LINE_LIMIT = 998  # RFC 5322 2.1.1: octets per line, CRLF excluded
FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 3.6.8 ftext
# Display names (from.name, a recipient's name), characters. The standard library folds a non-ASCII
# name in time that grows faster than its length: here about 40 ms for 256 Latin characters, 160 ms
# for 256 CJK ones, 5 s for 12,500. No real name is longer; the CRD caps from.name at 256 as well.
MAX_NAME = 256

# C0 and C1 controls, DEL, the two Unicode line separators (str.splitlines() breaks on all of
# these, and so do parts of the email package) and lone surrogates (not encodable as UTF-8).
_BAD_IN_TEXT = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # HTAB allowed
_BAD_IN_NAME = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

# Values written as they are: printable ASCII words separated by single spaces,
# which the standard library would neither encode nor fold.
_PLAIN_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*\Z")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_NAME = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*\Z")
_PLAIN_ADDR = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")


def _describe(char: str) -> str:
    kind = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"{kind} (U+{ord(char):04X})"


def text_problem(value: str, limit: int) -> str | None:
    """Why `value` cannot be a header value (subject, extra header), or None. HTAB is allowed."""
    if len(value) > limit:
        return f"is longer than {limit} characters"
    # isprintable() is False for every character refused here (and for a few allowed ones,
    # such as HTAB or NBSP): a quick yes for nearly every value, the regex decides the rest.
    if value.isprintable():
        return None
    bad = _BAD_IN_TEXT.search(value)
    return f"contains {_describe(bad.group())}" if bad else None


def name_problem(value: str, limit: int) -> str | None:
    """Why `value` cannot be a display name or an address, or None. No controls at all, not even HTAB."""
    if len(value) > limit:
        return f"is longer than {limit} characters"
    if value.isprintable():
        return None
    bad = _BAD_IN_NAME.search(value)
    return f"contains {_describe(bad.group())}" if bad else None


def fold(name: str, value: str | Address) -> bytes:
    """One header line, exactly as the standard library writes it."""
    if (
        isinstance(value, str)
        and len(name) + 2 + len(value) <= MAX_LINE
        and _PLAIN_TEXT.match(value)
        and "=?" not in value
    ):
        return f"{name}: {value}\r\n".encode("ascii")
    return str(POLICY.header_factory(name, value).fold(policy=POLICY)).encode("ascii")


def fold_address(name: str, display: str, spec: str) -> bytes:
    if _PLAIN_ADDR.match(spec) and (not display or _PLAIN_NAME.match(display)):
        line = f"{name}: {display} <{spec}>\r\n" if display else f"{name}: {spec}\r\n"
        if len(line) <= MAX_LINE + 2:
            return line.encode("ascii")
    return fold(name, Address(display, addr_spec=spec))


def fold_angle_list(name: str, items: Sequence[str]) -> bytes:
    """`Name: <a>, <b>`, folded between items as the standard library would, but never encoded.

    For List-ID and List-Unsubscribe. The standard library RFC 2047-encodes an item
    longer than a line, which no receiver decodes there: the unsubscribe link would
    be dead. Here such an item gets a line of its own (lines may have 998 octets).
    """
    if len(items) == 1 and len(name) + 2 + len(items[0]) <= MAX_LINE:
        return f"{name}: {items[0]}\r\n".encode("ascii")
    words = [f"{item}," for item in items[:-1]] + list(items[-1:])
    lines = [f"{name}:"]
    for word in words:
        if len(lines[-1]) + 1 + len(word) <= MAX_LINE:
            lines[-1] += " " + word
        else:
            lines.append(" " + word)
    lines.append("")
    return "\r\n".join(lines).encode("ascii")


def _field_pattern(name: str) -> bytes:
    # The first line holds "Name:" and then at most LINE_LIMIT octets in all; folded lines start with
    # SP or HTAB. Only printable ASCII and HTAB anywhere: no NUL, no bare CR or LF, no 8-bit bytes.
    first = LINE_LIMIT - len(name) - 2
    return rb"%s:(?:[ \t][\t\x20-\x7e]{0,%d})?\r\n(?:[ \t][\t\x20-\x7e]{0,%d}\r\n)*" % (
        re.escape(name.encode("ascii")),
        first,
        LINE_LIMIT - 1,
    )


class HeaderLines:
    """Exactly these fields, in this order, each complete with its folded lines: a check of written bytes."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._pattern = re.compile(b"".join(_field_pattern(n) for n in self.names))

    def match(self, data: bytes) -> bool:
        return self._pattern.fullmatch(data) is not None


@functools.lru_cache(maxsize=64)
def _one_field(name: str) -> HeaderLines:
    return HeaderLines([name])


def line_is_clean(name: str, line: bytes) -> bool:
    """Whether `line` (with its continuations) is exactly one field called `name`."""
    return _one_field(name).match(line)
