"""Addresses that arrive as something else than an address string, and the addresses a campaign sends from."""

from __future__ import annotations

from typing import Any

import pytest

from mailtrain_sender.addresses import InvalidAddressError, ascii_address, normalize


@pytest.mark.parametrize("address", [42, None, b"a@example.org", "x" * 100_000 + "@example.org"])
def test_normalize_refuses_what_is_not_an_address_string(address: Any) -> None:
    with pytest.raises(InvalidAddressError):
        normalize(address)


def test_ascii_address_accepts_only_ascii_valid_addresses() -> None:
    assert ascii_address("News@Acme.Example") == "News@Acme.Example"  # as written: case is the sender's
    for bad in ("jürgen@acme.example", "news@bücher.example", "a,b@acme.example", "news"):
        with pytest.raises(InvalidAddressError):
            ascii_address(bad)
