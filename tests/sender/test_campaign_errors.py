"""Whatever is wrong with a campaign, CompiledCampaign raises CampaignError with a reason, and nothing else.

Findings 9 and 10 of issue 6: a from.address the CRD accepts crashed the runner in a
loop, and a reserved header burnt every recipient. The wire format is a contract,
so the sender checks it itself, whatever the CRD let through.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from mailtrain_sender import wire_checks
from mailtrain_sender.layout import Recipient
from mailtrain_sender.render import CampaignError, CompiledCampaign, RecipientError, message_date
from tests.sender.conftest import campaign_wire

FROM = {"address": "news@acme.example", "name": "Acme News"}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"from": {"address": "jürgen@acme.example"}}, r"from.address .* not ASCII.*SMTPUTF8"),
        ({"from": {"address": "news@bücher.example"}}, r"from.address .* not ASCII.*xn--"),
        ({"from": {"address": "a,b@acme.example"}}, r"from.address .* invalid characters"),
        ({"from": {"address": "a(b@acme.example"}}, r"from.address .* invalid characters"),
        ({"from": {"address": "news@acme.example\x00"}}, r"from.address"),
        ({"from": {"address": "news@acme.example", "name": "Acme\x00"}}, r"from.name contains a control"),
        ({"from": {"address": "news@acme.example", "name": "Acme\tNews"}}, r"from.name contains a control"),
        ({"from": {"address": "news@acme.example", "name": "A" * 257}}, r"from.name is longer than 256"),
        (
            {"from": {"address": "news@acme.example", "name": "\ud800"}},
            r"from.name contains a lone surrogate",
        ),
        (
            {"from": {"address": "news@acme.example", "name": "=?utf-8?q?a=0D=0ABcc:_v@evil.example?="}},
            r"header From would not be written as one clean header line",
        ),
        ({"headers": {"Sender": "x@acme.example"}}, r"header Sender is set by the sender"),
        ({"headers": {"content-type": "text/html"}}, r"header content-type is set by the sender"),
        ({"headers": {"Return-Path": "<x@acme.example>"}}, r"header Return-Path is set by the sender"),
        ({"headers": {"X Note": "a"}}, r"header name 'X Note' is not an RFC 5322 field name"),
        ({"headers": {"X:Note": "a"}}, r"header name 'X:Note' is not"),
        ({"headers": {"X-Nöte": "a"}}, r"header name 'X-Nöte' is not"),
        ({"headers": {"": "a"}}, r"header name '' is not"),
        ({"headers": {"X-" + "a" * 80: "a"}}, r"is not an RFC 5322 field name of at most 76"),
        ({"headers": {"X-Note": "a\x00b"}}, r"X-Note contains a control character \(U\+0000\)"),
        ({"headers": {"X-Note": "a\x0bb"}}, r"X-Note contains a control character \(U\+000B\)"),
        ({"headers": {"X-Note": "a\x85b"}}, r"X-Note contains a control character \(U\+0085\)"),
        ({"headers": {"X-Note": "a\u2028b"}}, r"X-Note contains a control character \(U\+2028\)"),
        ({"headers": {"X-Note": "x" * 999}}, r"X-Note is longer than 998"),
        ({"headers": {f"X-{i}": "a" for i in range(51)}}, r"more than 50 extra headers"),
        (
            {"headers": {"X-Note": "=?utf-8?b?YQ0KQmNjOiB2QGV2aWwuZXhhbXBsZQ==?="}},
            r"header X-Note would not be written as one clean header line",
        ),
        ({"listId": "news.acme.example"}, r"listId 'news.acme.example' is not of the form <label.domain>"),
        ({"listId": "<news>"}, r"listId '<news>' is not of the form"),
        ({"listId": "<news.acme.example>\r\nBcc: v@evil.example"}, r"listId .* is not of the form"),
        ({"listId": "<" + "a." * 130 + "example>"}, r"listId .* is not of the form"),
        (
            {"listUnsubscribe": {"url": "javascript:alert(1)"}},
            r"listUnsubscribe.url must start with https://",
        ),
        ({"listUnsubscribe": {"url": "{{ scheme }}://acme.example/u"}}, r"must start with https://"),
        ({"listUnsubscribe": {"url": "http://acme.example/u", "oneClick": True}}, r"oneClick needs an https"),
        ({"listUnsubscribe": {"mailto": "u@acme.example", "oneClick": True}}, r"oneClick needs an https"),
        (
            {"listUnsubscribe": {"mailto": "unsubscribe"}},
            r"listUnsubscribe.mailto 'unsubscribe' is not an addr",
        ),
        (
            {"listUnsubscribe": {"mailto": "u@acme.example>, <https://evil"}},
            r"listUnsubscribe.mailto .* is not",
        ),
        ({"listUnsubscribe": {}}, r"listUnsubscribe needs url or mailto"),
        ({"subject": "{% if %}"}, r"subject: template does not compile: TemplateSyntaxError"),
        ({"text": "{{ name"}, r"text: template does not compile"),
        ({"html": "{% for x in y %}"}, r"html: template does not compile"),
        ({"html": "{% if a %}" * 2000 + "{% endif %}" * 2000}, r"html: template does not compile"),
        (
            {"listUnsubscribe": {"url": "https://acme.example/{{ x"}},
            r"listUnsubscribe.url: template does not",
        ),
        ({"subject": "x" * 999}, r"subject is longer than 998 characters"),
        ({"text": "x" * (1 << 20) + "x"}, r"text is longer than 1048576 characters"),
        ({"html": "{{ a }}" * 5001}, r"html has 5001 template tags; at most 5000"),
        ({"text": "Hello \ud800"}, r"text contains a lone surrogate \(U\+D800\)"),
        ({"id": "a b"}, r"the campaign id 'a b' cannot be part of a Message-ID"),
        ({"id": "a>\r\nBcc:x"}, r"the campaign id .* cannot be part of a Message-ID"),
        ({"id": "x" * 129}, r"cannot be part of a Message-ID"),
    ],
)
def test_a_bad_campaign_raises_campaign_error_with_the_reason(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(CampaignError, match=reason):
        CompiledCampaign(campaign_wire("bad", **fields))


def test_constant_folding_cannot_hang_the_compile() -> None:
    # Jinja2 folds constant expressions while compiling; intercepted operators are left to the render.
    compiled = CompiledCampaign(campaign_wire("fold", text="{{ 2 ** 100000000 }}"))
    with pytest.raises(RecipientError, match="a power over 4096 bits"):
        compiled.render(Recipient("a@example.org"), 0)


def test_an_unexpected_error_while_compiling_is_a_campaign_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(wire_checks, "fold_address", broken)
    with pytest.raises(CampaignError, match="the campaign cannot be prepared: RuntimeError: a bug"):
        CompiledCampaign(campaign_wire("bug"))


NASTY = [
    "",
    "a",
    "Acme",
    "news@acme.example",
    "jürgen@acme.example",
    "a,b@x.example",
    "a(b@x.example",
    "<x.acme.example>",
    "https://acme.example/u/{{ token }}",
    "http://acme.example/{{ name }}",
    "mailto:x@acme.example",
    "=?utf-8?q?a=0D=0ABcc:_v@evil.example?=",
    "=?utf-8?b?YQ0KQmNjOiB2QGV2aWwuZXhhbXBsZQ==?=",
    "{{ name }}",
    "{% if %}",
    "{{ 'a' * 10 }}",
    "a\x00b",
    "a\r\nBcc: v@evil.example",
    "a\tb",
    "\ud800",
    "中文",
    "x" * 300,
]


def _nasty_wire(rnd: random.Random) -> dict[str, Any]:
    def pick() -> str:
        return "".join(rnd.choice(NASTY) for _ in range(rnd.randint(1, 2)))

    fields: dict[str, Any] = {}
    if rnd.random() < 0.5:
        fields["from"] = {"address": rnd.choice([pick(), FROM["address"]]), "name": pick()}
    if rnd.random() < 0.4:
        fields["headers"] = {rnd.choice(["X-A", pick()]): pick()}
    if rnd.random() < 0.4:
        fields["listId"] = pick()
    if rnd.random() < 0.5:
        fields["listUnsubscribe"] = {"url": pick(), "mailto": pick(), "oneClick": rnd.random() < 0.3}
    for field in ("subject", "text", "html"):
        if rnd.random() < 0.3:
            fields[field] = pick()
    if rnd.random() < 0.1:
        fields["id"] = pick()
    return fields


def test_random_bad_campaigns_raise_campaign_error_and_nothing_else() -> None:
    rnd = random.Random(909)
    refused = sent = 0
    for case in range(1500):
        fields = _nasty_wire(rnd)
        try:
            compiled = CompiledCampaign(campaign_wire(f"n{case}", **fields))
        except CampaignError:
            refused += 1
            continue
        try:
            message = compiled.build(compiled.render(Recipient("a@example.org", "A"), 1), message_date())
        except RecipientError:
            continue
        sent += 1
        head = message.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        assert re.fullmatch(rb"(?:[!-9;-~]+:[\t -~]*\r\n(?:[ \t][\t -~]*\r\n)*)+", head), fields
        assert not re.search(rb"(?m)^Bcc:", head), fields
    assert refused > 300 and sent > 100  # both kinds were tried
