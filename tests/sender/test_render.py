"""Messages: the fast builder writes exactly the standard library's bytes; headers cannot be injected."""

from __future__ import annotations

import email
import email.policy
import random
from typing import Any

import pytest

from mailtrain_sender.layout import Recipient
from mailtrain_sender.render import (
    CampaignError,
    CompiledCampaign,
    InvalidRecipientError,
    RecipientError,
    message_date,
)
from tests.sender.conftest import campaign_wire

ALPHABET = "abcXYZ 019.,:;<>\"'()@!#=?\\[]ÄöüßéŁ€中文😀\t-_"


def _random_text(rnd: random.Random, longest: int) -> str:
    return "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, longest)))


def _random_case(rnd: random.Random) -> tuple[dict[str, Any], Recipient]:
    content: dict[str, Any] = {"subject": _random_text(rnd, 120) + " {{ name }}"}
    shape = rnd.choice(["text", "html", "both"])
    lines = "\n".join(_random_text(rnd, rnd.choice([20, 90, 200])) for _ in range(rnd.randint(1, 15)))
    content["text"] = "Hi {{ name }},\n" + lines if shape != "html" else None
    content["html"] = "<p>{{ name }}</p>" + lines if shape != "text" else None
    content["from"] = {
        "address": "news@acme.example",
        "name": rnd.choice(["", "Acme", _random_text(rnd, 40)]),
    }
    if rnd.random() < 0.5:
        content["listUnsubscribe"] = {
            # short enough for one line: the standard library would encode a longer one (see the wire tests)
            "url": "https://acme.example/u/{{ token }}?c={{ code[:2] }}",
            "oneClick": rnd.random() < 0.5,
        }
        if rnd.random() < 0.5:
            content["listUnsubscribe"]["mailto"] = "unsubscribe@acme.example"
    if rnd.random() < 0.3:
        content["headers"] = {"X-Campaign": _random_text(rnd, 60).replace("\t", " ")}
    # Encoded words are decoded by the standard library's folding (the same in both builders).
    name = rnd.choice(
        [None, "Bob", "Jürgen Müller", '"Doe, John"', "=?utf-8?q?J=C3=BCrgen?=", _random_text(rnd, 50)]
    )
    return content, Recipient(
        f"user{rnd.randint(0, 10**6)}@example.org", name, {"code": _random_text(rnd, 10)}
    )


def test_fast_builder_writes_the_same_bytes_as_the_standard_library() -> None:
    rnd = random.Random(20261128)
    compared = 0
    for case in range(2000):
        content, recipient = _random_case(rnd)
        try:
            compiled = CompiledCampaign(campaign_wire(f"c{case}", **content))
            rendered = compiled.render(recipient, case)
        except (CampaignError, RecipientError):
            continue  # a name with a tab, say: refused before any bytes exist
        date = message_date()
        assert compiled.build(rendered, date) == compiled.build_reference(rendered, date), content
        compared += 1
    assert compared > 1600


def _parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_headers_and_parts_of_a_personalised_message() -> None:
    wire = campaign_wire(
        "welcome",
        subject="Grüße, {{ name }}!",
        text="Hallo {{ name }}, Code {{ code }}",
        html="<p>Hallo {{ name }}</p>",
        listUnsubscribe={"url": "https://acme.example/u/{{ token }}", "oneClick": True},
        headers={"X-Campaign": "welcome"},
    )
    compiled = CompiledCampaign(wire)
    rendered = compiled.render(Recipient("jm@example.org", "Jürgen <Müller>", {"code": "A1"}), 7)
    msg = _parse(compiled.build(rendered, message_date()))
    assert msg["Subject"] == "Grüße, Jürgen <Müller>!"
    assert msg["To"].addresses[0].display_name == "Jürgen <Müller>"
    assert msg["To"].addresses[0].addr_spec == "jm@example.org"
    assert msg["From"] == "Acme News <news@acme.example>"
    assert msg["Message-ID"] == f"<{wire.id}.7@acme.example>"
    assert msg["List-ID"] == "<welcome.test.mailtrain.dev>"
    token = compiled.token("jm@example.org")
    assert msg["List-Unsubscribe"] == f"<https://acme.example/u/{token}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Campaign"] == "welcome"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = (part.get_content() for part in msg.iter_parts())
    assert text.strip() == "Hallo Jürgen <Müller>, Code A1"
    assert html.strip() == "<p>Hallo Jürgen &lt;Müller&gt;</p>"  # html escapes, text does not


def test_tokens_are_per_recipient_and_keyed() -> None:
    a = CompiledCampaign(campaign_wire("a", tokenKey="one"))
    b = CompiledCampaign(campaign_wire("b", tokenKey="two"))
    assert a.token("x@example.org") == a.token("X@example.org")
    assert a.token("x@example.org") != a.token("y@example.org")
    assert a.token("x@example.org") != b.token("x@example.org")


@pytest.mark.parametrize(
    ("recipient", "content", "error"),
    [
        (
            Recipient("a@example.org", "A", {"s": "hi\r\nBcc: victim@example.org"}),
            {"subject": "{{ s }}"},
            RecipientError,
        ),
        (Recipient("a@example.org", "A\nBcc: victim@example.org"), {}, InvalidRecipientError),
        (Recipient("a@example.org\r\nBcc: v@example.org"), {}, InvalidRecipientError),
    ],
    ids=["subject", "name", "address"],
)
def test_cr_lf_injected_through_recipient_data_is_refused(
    recipient: Recipient, content: dict[str, Any], error: type[RecipientError]
) -> None:
    compiled = CompiledCampaign(campaign_wire("inject", **content))
    with pytest.raises(error, match=r"control character \(U\+000[AD]\)"):
        compiled.render(recipient, 0)


def test_cr_lf_in_an_unsubscribe_url_variable_is_percent_encoded() -> None:
    wire = campaign_wire("inject", listUnsubscribe={"url": "https://acme.example/{{ u }}"})
    compiled = CompiledCampaign(wire)
    rendered = compiled.render(Recipient("a@example.org", "A", {"u": "x>\r\nBcc: v@example.org"}), 0)
    assert rendered.list_unsubscribe == "<https://acme.example/x%3E%0D%0ABcc%3A%20v%40example.org>"
    assert b"\r\nBcc" not in compiled.build(rendered, message_date())


def test_bad_campaign_headers_are_refused() -> None:
    with pytest.raises(CampaignError, match=r"X-Note contains a control character \(U\+000D\)"):
        CompiledCampaign(campaign_wire("h", headers={"X-Note": "a\r\nBcc: v@example.org"}))
    with pytest.raises(CampaignError, match="cannot be overridden"):
        CompiledCampaign(campaign_wire("h", headers={"Message-ID": "<x@y>"}))
    with pytest.raises(CampaignError, match="does not compile"):
        CompiledCampaign(campaign_wire("h", subject="{% if %}"))


def test_templates_run_in_the_sandbox() -> None:
    compiled = CompiledCampaign(campaign_wire("s", text="{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    with pytest.raises(RecipientError, match=r"SecurityError|UndefinedError"):
        compiled.render(Recipient("a@example.org"), 0)
