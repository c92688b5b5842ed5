"""Header injection is judged on the bytes written, whatever the Python version's email package does.

Finding 13 of issue 6: the CR/LF check ran before folding, and folding decodes RFC 2047
encoded words, so on Python 3.11.7 (CVE-2024-6923) a name such as the ones below put a
raw `Bcc:` header on the wire; NUL bytes got there on every version.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from mailtrain_sender import headers, render
from mailtrain_sender.headers import HeaderLines
from mailtrain_sender.layout import Recipient
from mailtrain_sender.render import (
    CampaignError,
    CompiledCampaign,
    InvalidRecipientError,
    RecipientError,
    message_date,
)
from tests.sender.conftest import campaign_wire


def _b(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


PAYLOADS = [
    "=?utf-8?q?a=0D=0ABcc:_victim@evil.example?=",
    "=?UTF-8?Q?a=0ABcc:_victim@evil.example?=",
    "=?utf-8?q?a=0DBcc:_victim@evil.example?=",
    "=?utf-8?q?a=00b?=",
    "=?iso-8859-1?q?a=0D=0ABcc:_victim@evil.example?=",
    _b("a\r\nBcc: victim@evil.example"),
    _b("a\nBcc: victim@evil.example"),
    _b("x\x00y"),
    "Jo " + _b("\r\nBcc: victim@evil.example") + " Doe",
]
RAW_BCC = re.compile(rb"(?m)^Bcc:")


def _head(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0]


EXPECTED = [b"From", b"Date", b"To", b"Subject", b"Message-ID", b"List-ID", b"MIME-Version"]


def _assert_clean(message: bytes) -> None:
    """The header block is the expected fields, each printable ASCII with folded lines."""
    head = _head(message) + b"\r\n"
    assert re.fullmatch(rb"(?:[!-9;-~]+: ?[\t -~]*\r\n(?:[ \t][\t -~]*\r\n)*)+", head), head
    assert re.findall(rb"(?m)^([!-9;-~]+):", head)[:7] == EXPECTED, head


def _broken(line: bytes) -> bool:
    """Whether a folded header line holds a control byte other than its folds (an independent oracle)."""
    unfolded = line[:-2].replace(b"\r\n ", b"  ").replace(b"\r\n\t", b"  ")
    return any((byte < 0x20 and byte != 9) or byte == 0x7F for byte in unfolded)


def _send(compiled: CompiledCampaign, recipient: Recipient) -> bytes | RecipientError:
    try:
        return compiled.build(compiled.render(recipient, 0), message_date())
    except RecipientError as exc:
        return exc


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("subject", ["Hello", "Hello {{ name }}"], ids=["To", "To and Subject"])
def test_an_encoded_word_in_a_recipient_name_never_reaches_the_wire(payload: str, subject: str) -> None:
    compiled = CompiledCampaign(campaign_wire("name", subject=subject))
    # What this Python's email package makes of the name decides the outcome; the bytes never break.
    outcome = _send(compiled, Recipient("a@example.org", payload))
    if _broken(headers.fold_address("To", payload, "a@example.org")):
        assert isinstance(outcome, InvalidRecipientError)
        assert "To header" in str(outcome)
    elif isinstance(outcome, RecipientError):  # only the subject decoded it: this template cannot carry it
        assert subject != "Hello" and "Subject header" in str(outcome)
    else:
        _assert_clean(outcome)  # the name stays an encoded word in To: sent as it is


@pytest.mark.parametrize("payload", PAYLOADS)
def test_an_encoded_word_in_a_subject_variable_never_reaches_the_wire(payload: str) -> None:
    compiled = CompiledCampaign(campaign_wire("subject", subject="Hello {{ s }}"))
    with pytest.raises(RecipientError, match="the Subject header would not be one clean header"):
        compiled.build(compiled.render(Recipient("a@example.org", "A", {"s": payload}), 0), message_date())


@pytest.mark.parametrize("payload", PAYLOADS)
def test_an_encoded_word_in_an_extra_header_stops_the_campaign(payload: str) -> None:
    with pytest.raises(CampaignError, match="header X-Note would not be written as one clean header line"):
        CompiledCampaign(campaign_wire("campaign", headers={"X-Note": payload}))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_an_encoded_word_in_from_name_stops_the_campaign_or_stays_encoded(payload: str) -> None:
    sender: dict[str, Any] = {"from": {"address": "a@acme.example", "name": payload}}
    wire = campaign_wire("from", **sender)
    if _broken(headers.fold_address("From", payload, "a@acme.example")):
        with pytest.raises(CampaignError, match="header From would not be written as one clean header line"):
            CompiledCampaign(wire)
    else:
        compiled = CompiledCampaign(wire)
        outcome = _send(compiled, Recipient("b@example.org", "B"))
        assert isinstance(outcome, bytes)
        _assert_clean(outcome)


def test_a_harmless_encoded_word_is_sent_decoded_as_before() -> None:
    compiled = CompiledCampaign(campaign_wire("ok", subject="{{ s }}"))
    word = "=?utf-8?q?J=C3=BCrgen?="
    message = compiled.build(
        compiled.render(Recipient("a@example.org", word, {"s": word}), 0), message_date()
    )
    assert b"To: =?utf-8?q?J=C3=BCrgen?= <a@example.org>\r\n" in message
    assert b"Subject: =?utf-8?q?J=C3=BCrgen?=\r\n" in message


@pytest.mark.parametrize("field", ["fold", "fold_address"])
def test_the_check_holds_whatever_the_email_package_writes(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    """A folding that injects a header (as some Python versions do) is caught on the bytes."""
    honest = getattr(headers, field)

    def injecting(name: str, *args: Any) -> bytes:
        line: bytes = honest(name, *args)
        return line + b"Bcc: victim@evil.example\r\n" if name in ("To", "Subject") else line

    monkeypatch.setattr(render, field, injecting)
    compiled = CompiledCampaign(campaign_wire("any-python"))
    with pytest.raises(RecipientError, match=r"Bcc: victim@evil\.example"):
        compiled.render(Recipient("a@example.org", "A"), 0)


@pytest.mark.parametrize(
    "recipient",
    [
        Recipient("a@example.org", "A\x00B"),
        Recipient("a@example.org", "A\rBcc: v@evil.example"),
        Recipient("a@example.org\x00", "A"),
    ],
    ids=["NUL in name", "bare CR in name", "NUL in address"],
)
def test_controls_in_recipient_data_are_invalid_before_any_folding(recipient: Recipient) -> None:
    compiled = CompiledCampaign(campaign_wire("controls"))
    with pytest.raises(InvalidRecipientError, match=r"contains a control character \(U\+000[0D]\)"):
        compiled.render(recipient, 0)


@pytest.mark.parametrize("value", ["a\x00b", "a\rb", "a\nb", "a\x1bb", "a\x7fb"])
def test_controls_in_a_rendered_subject_fail_the_recipient(value: str) -> None:
    compiled = CompiledCampaign(campaign_wire("controls", subject="{{ s }}"))
    with pytest.raises(RecipientError, match="the subject contains a control character"):
        compiled.render(Recipient("a@example.org", "A", {"s": value}), 0)


def test_a_tab_in_a_subject_is_allowed_and_written() -> None:
    compiled = CompiledCampaign(campaign_wire("tab", subject="a\t{{ s }}"))
    message = compiled.build(compiled.render(Recipient("a@example.org", "A", {"s": "b"}), 0), message_date())
    assert b"Subject: a\tb\r\n" in message


BLOCK = HeaderLines(["To", "Subject", "Message-ID"])


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (b"To: a@example.org\r\nSubject: Hi\r\nMessage-ID: <x@y>\r\n", True),
        (b"To: a@example.org\r\nSubject: Hi\r\n there\r\n\tand here\r\nMessage-ID: <x@y>\r\n", True),
        (b"To: a@example.org\r\nSubject:\r\nMessage-ID: <x@y>\r\n", True),
        (b"To: a@example.org\r\nSubject: Hi\r\nBcc: v@evil.example\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nSubject: Hi\nBcc: v@evil.example\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nSubject: Hi\rBcc: v@evil.example\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nSubject: H\x00i\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nSubject: H\xc3\xa4\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nSubject: Hi\r\n\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nMessage-ID: <x@y>\r\n", False),
        (b"Subject: Hi\r\nTo: a@example.org\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nTo: b@example.org\r\nSubject: Hi\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nSubject: " + b"x" * 989 + b"\r\nMessage-ID: <x@y>\r\n", True),
        (b"To: a@example.org\r\nSubject: " + b"x" * 990 + b"\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nSubject: Hi\r\n " + b"x" * 998 + b"\r\nMessage-ID: <x@y>\r\n", False),
        (b"To: a@example.org\r\nSubject: Hi\r\nMessage-ID: <x@y>", False),
    ],
    ids=[
        "clean",
        "folded",
        "empty value",
        "extra field",
        "bare LF",
        "bare CR",
        "NUL",
        "8-bit",
        "empty line",
        "missing field",
        "reordered",
        "repeated field",
        "998 octets",
        "999 octets",
        "long continuation",
        "no final CRLF",
    ],
)
def test_header_lines_are_exactly_the_expected_fields(data: bytes, ok: bool) -> None:
    assert BLOCK.match(data) is ok


def _unsubscribe_line(message: bytes) -> bytes:
    found = re.search(rb"List-Unsubscribe: ?(?:.*?\r\n)(?: .*?\r\n)*", message)
    assert found is not None
    return found.group()


def test_variables_in_the_unsubscribe_url_cannot_add_a_target() -> None:
    wire = campaign_wire("unsub", listUnsubscribe={"url": "https://acme.example/u?e={{ email }}&x={{ x }}"})
    compiled = CompiledCampaign(wire)
    recipient = Recipient("a+b@example.org", "A", {"x": "x>, <https://evil.example/steal"})
    message = compiled.build(compiled.render(recipient, 0), message_date())
    line = _unsubscribe_line(message)
    assert line == (
        b"List-Unsubscribe:\r\n <https://acme.example/u?e=a%2Bb%40example.org&x=x%3E%2C%20%3Chttps%3A%2F%2F"
        b"evil.example%2Fsteal>\r\n"
    )
    assert line.count(b"<") == 1


def test_a_long_unsubscribe_url_is_written_whole_and_unencoded() -> None:
    path = "{{ token }}/" + "p" * 150
    wire = campaign_wire(
        "long", listUnsubscribe={"url": "https://acme.example/" + path, "mailto": "u@acme.example"}
    )
    compiled = CompiledCampaign(wire)
    rendered = compiled.render(Recipient("a@example.org", "A"), 0)
    date = message_date()
    url = f"https://acme.example/{compiled.token('a@example.org')}/{'p' * 150}"
    expected = f"List-Unsubscribe:\r\n <{url}>,\r\n <mailto:u@acme.example>\r\n".encode()
    assert _unsubscribe_line(compiled.build(rendered, date)) == expected
    # The standard library would encode it, and no receiver decodes encoded words there.
    assert b"=?utf-8?" in _unsubscribe_line(compiled.build_reference(rendered, date))


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("https://acme.example/u/<{{ token }}>", "is not one http\\(s\\) URL"),
        ("https://acme.example/u/{{ token }}, <https://evil.example>", "is not one http\\(s\\) URL"),
        ("https://acme.example/u /{{ token }}", "is not one http\\(s\\) URL"),
        ("https://acme.example/ü/{{ token }}", "is not one http\\(s\\) URL"),
        ("https://{% if false %}x{% endif %}", "is not one http\\(s\\) URL"),
    ],
)
def test_a_rendered_unsubscribe_url_must_be_one_url(template: str, reason: str) -> None:
    compiled = CompiledCampaign(campaign_wire("bad-url", listUnsubscribe={"url": template}))
    with pytest.raises(RecipientError, match=reason):
        compiled.render(Recipient("a@example.org", "A"), 0)


def test_list_id_and_one_click_headers_are_written_as_expected() -> None:
    wire = campaign_wire(
        "listid",
        listId="<" + "l" * 80 + ".acme.example>",
        listUnsubscribe={"url": "https://acme.example/u/{{ token }}", "oneClick": True},
        headers={"X-Campaign": "spring"},
    )
    compiled = CompiledCampaign(wire)
    message = compiled.build(compiled.render(Recipient("a@example.org", "A"), 3), message_date())
    head = _head(message) + b"\r\n"
    assert b"List-ID:\r\n <" + b"l" * 80 + b".acme.example>\r\n" in head
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head
    names = re.findall(rb"(?m)^([!-9;-~]+):", head)
    assert names == [
        b"From",
        b"Date",
        b"To",
        b"Subject",
        b"Message-ID",
        b"List-Unsubscribe",
        b"List-Unsubscribe-Post",
        b"List-ID",
        b"X-Campaign",
        b"MIME-Version",
        b"Content-Type",
        b"Content-Transfer-Encoding",
    ]
    assert not RAW_BCC.search(head)


def test_a_date_that_cannot_be_a_header_is_refused() -> None:
    compiled = CompiledCampaign(campaign_wire("date"))
    rendered = compiled.render(Recipient("a@example.org", "A"), 0)
    with pytest.raises(RecipientError, match="cannot be a Date header"):
        compiled.build(rendered, "Mon, 1 Jan 2024 00:00:00 +0000\r\nBcc: v@evil.example")
