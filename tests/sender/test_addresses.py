"""The cached address check gives email-validator's verdict, address by address."""

from __future__ import annotations

import random

import pytest
from email_validator import EmailNotValidError, validate_email

from mailtrain_sender.addresses import InvalidAddressError, normalize

HANDWRITTEN = [
    "a@example.org",
    "A.B-c+tag@Example.ORG",
    "x@sub.domain.example",
    "user@bücher.de",
    "u@xn--bcher-kva.de",
    "a..b@example.org",
    ".a@example.org",
    "a.@example.org",
    "a b@example.org",
    "a@b",
    "a@localhost",
    "a@[127.0.0.1]",
    '"quoted"@example.org',
    "Ä@example.org",
    "a@-bad.example",
    "a@bad-.example",
    "a@example..org",
    "@example.org",
    "a@",
    "plain",
    "a@example.org\r\nBcc: x@y.example",
    "x" * 65 + "@e.org",
    "a@" + "b" * 64 + ".org",
    "a@" + ".".join(["abcdefghij"] * 25) + ".org",
    "a@example.test",
    "a@example.local",
    "a@123.456",
    "a@example.o",
    "a!#$%&'*+/=?^_`{|}~-@example.org",
    "a@exa_mple.org",
    "a@EXAMPLE.org",
]


def _reference(address: str) -> str | None:
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return result.ascii_email or result.normalized


def _ours(address: str) -> str | None:
    try:
        return normalize(address)
    except InvalidAddressError:
        return None


def _random_addresses(count: int) -> list[str]:
    rnd = random.Random(11)
    pieces = ["a", "Bc", "1", ".", "-", "+", "_", "..", "ü", " ", "@", "x" * 30, "'", "é", "\t"]
    domains = ["example.org", "Example.COM", "b", "bücher.de", "-x.org", "a..b", "localhost", "x.y.z", "1.2"]
    return [
        "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 5))) + "@" + rnd.choice(domains)
        for _ in range(count)
    ]


@pytest.mark.parametrize("address", HANDWRITTEN)
def test_same_verdict_as_email_validator(address: str) -> None:
    assert _ours(address) == _reference(address)


def test_same_verdict_on_random_addresses() -> None:
    corpus = _random_addresses(3000)
    assert sum(_reference(a) is not None for a in corpus) > 200  # the corpus holds valid ones too
    assert [_ours(a) for a in corpus] == [_reference(a) for a in corpus]
