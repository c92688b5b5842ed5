"""A recipient's unusable data makes InvalidRecipientError, with the reason, and nothing else.

Finding 12 of issue 6: a `vars` that is not a mapping, a name that is not a string or a
lone surrogate became five "internal error" retries, each dropping a healthy SMTP
connection. And finding 11: a 12,500-character non-ASCII name took 5 s to fold.
"""

from __future__ import annotations

import pytest

from mailtrain_sender.layout import Recipient, decode_chunk
from mailtrain_sender.render import (
    MAX_NAME,
    CompiledCampaign,
    InvalidRecipientError,
    RecipientError,
    check_recipient,
    message_date,
)
from tests.sender.conftest import campaign_wire

BAD: list[tuple[Recipient, str]] = [
    (Recipient(42), "the address is a int, not a string"),  # type: ignore[arg-type]
    (Recipient(None), "the address is a NoneType"),  # type: ignore[arg-type]
    (Recipient(["a@example.org"]), "the address is a list"),  # type: ignore[arg-type]
    (Recipient("a@example.org", 7), "the name is a int, not a string"),  # type: ignore[arg-type]
    (Recipient("a@example.org", {"first": "A"}), "the name is a dict"),  # type: ignore[arg-type]
    (Recipient("a@example.org", "A", ["x"]), "vars is a list, not a mapping"),  # type: ignore[arg-type]
    (Recipient("a@example.org", "A", "x"), "vars is a str, not a mapping"),  # type: ignore[arg-type]
    (Recipient("a@example.org", "A", {1: "x"}), "vars has a key that is a int"),  # type: ignore[dict-item]
    (Recipient("a@example.org", "A\ud800"), r"the name contains a lone surrogate \(U\+D800\)"),
    (Recipient("a\udcff@example.org", "A"), r"the address contains a lone surrogate \(U\+DCFF\)"),
    (Recipient("a@example.org", "A", {"x": "\udc80"}), r"vars\['x'\] contains a lone surrogate"),
    (Recipient("a@example.org", "A", {"\ud800": "x"}), "a vars key contains a lone surrogate"),
    (Recipient("a@example.org", "A", {"x": [{"y": ["\ud800"]}]}), r"vars\['x'\] contains a lone surrogate"),
    (Recipient("a@example.org", "A\x00"), r"the name contains a control character \(U\+0000\)"),
    (Recipient("a@example.org", "A\tB"), r"the name contains a control character \(U\+0009\)"),
    (Recipient("a@example.org", "A\x85B"), r"the name contains a control character \(U\+0085\)"),
    (Recipient("a@example.org", "A\u2029B"), r"the name contains a control character \(U\+2029\)"),
    (Recipient("a@example.org\x00"), r"the address contains a control character \(U\+0000\)"),
    (Recipient("a@example.org", "ü" * (MAX_NAME + 1)), "the name is longer than 256 characters"),
    (Recipient("a@example.org", "Jürgen Müller " * 900), "the name is longer than 256 characters"),
    (Recipient("a" * 250 + "@example.org"), "the address is longer than 254 characters"),
]


@pytest.mark.parametrize(("recipient", "reason"), BAD)
def test_check_recipient_says_why_the_data_is_unusable(recipient: Recipient, reason: str) -> None:
    with pytest.raises(InvalidRecipientError, match=reason):
        check_recipient(recipient)


@pytest.mark.parametrize(("recipient", "reason"), BAD)
def test_render_refuses_the_same_recipients_as_invalid(recipient: Recipient, reason: str) -> None:
    compiled = CompiledCampaign(campaign_wire("data", text="{{ name }} {{ vars }}"))
    with pytest.raises(InvalidRecipientError, match=reason):
        compiled.render(recipient, 0)


def test_invalid_recipients_are_recipient_errors_for_callers_that_know_only_those() -> None:
    assert issubclass(InvalidRecipientError, RecipientError)


GOOD = [
    Recipient("a@example.org"),
    Recipient("a@example.org", None, None),
    Recipient("a@example.org", "", {}),
    Recipient("a@example.org", "ü" * MAX_NAME),
    Recipient("a@example.org", "Zoë\u00a0Smith"),  # no-break space
    Recipient("a@example.org", "👩\u200d💻 Dev"),  # zero width joiner
    Recipient("a@example.org", "中文 名前", {"note": "line one\nline two\ttabbed", "n": 3, "ok": True}),
    Recipient("a@example.org", "A", {"nested": {"list": [1, 2.5, None, "ü"]}}),
]


@pytest.mark.parametrize("recipient", GOOD)
def test_usable_data_passes_and_renders(recipient: Recipient) -> None:
    assert check_recipient(recipient) is recipient
    compiled = CompiledCampaign(campaign_wire("good", text="{{ name }} {{ vars }}"))
    compiled.build(compiled.render(recipient, 0), message_date())


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ('["a@example.org", "A", ["not", "a", "mapping"]]', "vars is a list"),
        ('["a@example.org", 12]', "the name is a int"),
        ('["a@example.org", "\\ud800"]', "lone surrogate"),
        ("[12345]", "the address is a int"),
    ],
)
def test_rows_decoded_from_redis_are_checked(row: str, reason: str) -> None:
    (recipient,) = decode_chunk(f"[{row}]")
    with pytest.raises(InvalidRecipientError, match=reason):
        check_recipient(recipient)
