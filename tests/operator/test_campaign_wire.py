"""Spec → wire format, the sender's checks, the inline source, and publishing with a digest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from mailtrain_operator.api import Checkpoint, MailCampaignSpec, Recipients
from mailtrain_operator.campaigns import publish, wire
from mailtrain_operator.campaigns.sources import LoadedSource, SourceError, open_source
from mailtrain_operator.settings import OperatorSettings
from mailtrain_sender.layout import CampaignKeys, Recipient
from mailtrain_sender.publisher import Publisher

META = {"uid": "0b7c8a4e-6d1f-4c53-9a0e-2f9d4b1c7e55", "namespace": "mail", "name": "winter",
        "creationTimestamp": "2026-01-02T03:04:05Z"}  # fmt: skip


def spec(**fields: Any) -> MailCampaignSpec:
    return MailCampaignSpec.model_validate(
        {
            "senderPool": "bulk",
            "from": {"address": "news@acme.example", "name": "Acme"},
            "subject": "Hello {{ name }}",
            "text": "Hi {{ name }}",
            "recipients": {"inline": [{"email": "a@example.org"}]},
        }
        | fields
    )


def test_the_wire_format_names_the_campaign_by_uid_and_keeps_its_place_by_creation() -> None:
    built = wire.build_wire(META, spec(listId="news.acme.example", priority=7), chunk_size=64)
    assert (built.id, built.name, built.pool) == (META["uid"], "mail/winter", "mail/bulk")
    assert built.created_ms == 1767323045000 and built.priority == 7 and built.chunk_size == 64
    assert built.list_id == "<news.acme.example>"  # the header's brackets; the CRD takes it without
    assert built.sender.address == "news@acme.example" and built.sender.name == "Acme"
    assert (
        len(built.token_key) >= 32
        and built.token_key != wire.build_wire(META, spec(), chunk_size=64).token_key
    )
    wire.check(built)


def test_the_sender_s_checks_give_a_reason_and_what_to_fix() -> None:
    with pytest.raises(wire.InvalidCampaign) as template:
        wire.check(wire.build_wire(META, spec(html="<p>{% if %}</p>"), chunk_size=64))
    assert template.value.reason == "InvalidTemplate"
    assert template.value.message.startswith("html: template does not compile: TemplateSyntaxError")
    assert template.value.message.endswith("; fix the spec and the campaign is checked again")
    with pytest.raises(wire.InvalidCampaign) as reserved:
        wire.check(wire.build_wire(META, spec(headers={"Return-Path": "x"}), chunk_size=64))
    assert reserved.value.reason == "InvalidCampaign"
    assert reserved.value.message.startswith(
        "header Return-Path is set by the sender and cannot be overridden"
    )


def test_edited_fields_name_content_only_by_their_spec_names() -> None:
    published = wire.build_wire(META, spec(), chunk_size=64)
    same = wire.build_wire(META, spec(priority=9, suspend=True), chunk_size=64)
    assert wire.edited_fields(published, same) == []
    other = wire.build_wire(
        META, spec(subject="New", **{"from": {"address": "news@acme.example"}}), chunk_size=64
    )
    assert wire.edited_fields(published, other) == ["from", "subject"]


async def collect(source: Any) -> list[Recipient]:
    return [r async for r in source]


async def test_the_inline_source_drops_repeated_addresses_whatever_their_case() -> None:
    recipients = Recipients.model_validate(
        {
            "inline": [
                {"email": "a@example.org", "name": "A"},
                {"email": "B@example.org", "vars": {"x": 1}},
                {"email": "A@Example.org"},
                {"email": "b@example.org"},
            ]
        }
    )
    source = open_source("mail", recipients, OperatorSettings())
    assert isinstance(source, LoadedSource)
    assert await collect(source) == [
        Recipient("a@example.org", "A"),
        Recipient("B@example.org", None, {"x": 1}),
    ]
    assert (source.duplicates, source.invalid) == (2, 0)
    assert len(await collect(source)) == 2 and source.duplicates == 2  # read again: the same


async def test_a_source_that_cannot_be_read_says_so_when_it_is_read() -> None:
    recipients = Recipients.model_validate({"url": {"href": "https://lists.acme.example:0/winter.csv"}})
    source = open_source("mail", recipients, OperatorSettings())  # nothing is read yet
    with pytest.raises(SourceError) as raised:
        await collect(source)
    assert raised.value.reason in ("BadUrl", "UrlUnreachable"), raised.value
    assert "winter.csv" in raised.value.message or "lists.acme.example" in raised.value.message


class Listed:
    def __init__(self, recipients: list[Recipient]) -> None:
        self.recipients, self.invalid, self.duplicates = recipients, 1, 2

    async def __aiter__(self) -> AsyncIterator[Recipient]:
        for r in self.recipients:
            yield r


def people(count: int, name: str = "P") -> list[Recipient]:
    return [Recipient(f"p{i}@example.org", f"{name} {i}") for i in range(count)]


@pytest.fixture
async def publisher(redis_url: str) -> AsyncIterator[Publisher]:
    client = Redis.from_url(redis_url)
    yield Publisher(client)
    await client.aclose()


async def test_publish_records_a_digest_that_a_republish_checks(publisher: Publisher) -> None:
    built = wire.build_wire(META, spec(), chunk_size=8)
    done = await publish.publish(publisher, built, Listed(people(20)))
    assert (done.wire.total, done.wire.chunks, done.invalid, done.duplicates) == (20, 3, 1, 2)
    again = await publish.publish(publisher, built, Listed(people(20)))  # published: read only for the digest
    assert again.digest == done.digest and again.wire == done.wire
    await publisher.delete(built.id, built.pool)  # as a Redis loss would

    checkpoint = Checkpoint(chunk_size=8, chunks=3, completed_chunks="0", failed=0, invalid=0,
                            recipients_digest=done.digest)  # fmt: skip
    with pytest.raises(SourceError) as changed:
        await publish.publish(publisher, built, Listed(people(20, name="Q")), checkpoint=checkpoint)
    assert changed.value.reason == "RecipientsChanged"
    assert (await publisher.progress(built.id)).state == "missing"  # no state: no sender sends any of it
    back = await publish.publish(publisher, built, Listed(people(20)), checkpoint=checkpoint)
    progress = await publisher.progress(built.id)
    assert back.digest == done.digest and progress.completed_chunks == [(0, 0)] and progress.pending == 12


async def test_a_publish_that_did_not_read_its_source_still_gets_the_digest(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        built = wire.build_wire(META, spec(), chunk_size=8)
        await Publisher(client).publish(built, people(5))  # an operator that died before its status write
        done = await publish.publish(Publisher(client), built, Listed(people(5)))
        assert done.digest.startswith("sha256:") and done.wire.total == 5
        assert await client.exists(CampaignKeys(built.id).state)
    finally:
        await client.aclose()
