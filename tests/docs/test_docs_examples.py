"""The user docs show examples/ verbatim, and every example is one a user can run: shell snippets parse
and name files that exist, recipient lists load without an invalid row, and every campaign renders
for every recipient of its list through the sender's own code. No cluster here; test_examples_apply.py
and test_examples_install.py take the same files to the apiserver."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from mailtrain_operator.api import MailCampaignSpec
from mailtrain_operator.campaigns import wire
from mailtrain_sender.render import CompiledCampaign
from tests.docs import examples, lists
from tests.harness.binaries import REPO_ROOT

# The screenshot `make demo` writes (README.md shows it); it comes with the demo's own change.
MADE_ELSEWHERE = {"docs/demo.svg"}
CHECKED_SUFFIXES = {".yaml", ".yml", ".sh", ".csv", ".jsonl", ".md"}
# Paths a shell snippet may name, relative to a checkout (the snippets run from its root).
_PATH = re.compile(r"(?<![\w./-])((?:examples|helm|crds|docs)/[\w./-]*)")


def _embedded() -> list[examples.Block]:
    return [block for doc in examples.ALL_DOCS for block in examples.blocks(doc) if block.example]


def test_every_example_block_of_the_docs_is_its_file_verbatim() -> None:
    shown = _embedded()
    assert len(shown) >= 20, f"only {len(shown)} embedded examples: the docs lost their markers?"
    for block in shown:
        assert block.example is not None
        path = REPO_ROOT / block.example
        assert path.is_file() and path.is_relative_to(examples.EXAMPLES), (
            f"{block.where} shows {block.example}, which is not a file under examples/"
        )
        assert block.text == path.read_text(), (
            f"{block.where} differs from {block.example}: copy the file into the block again"
        )


def test_every_marker_sits_right_before_a_code_block() -> None:
    for doc in examples.ALL_DOCS:
        lines = {block.line - 1 for block in examples.blocks(doc) if block.example}
        for number, path in examples.markers(doc):
            where = f"{examples.relative(doc)}:{number}"
            assert number in lines, f"{where}: the marker of {path} has no block after it"


def test_every_yaml_and_shell_block_of_the_user_docs_is_an_example() -> None:
    for doc in examples.USER_DOCS:
        assert doc.is_file(), f"{examples.relative(doc)} is missing"
        for block in examples.blocks(doc):
            if block.language in examples.EXAMPLE_LANGUAGES:
                assert block.example, (
                    f"{block.where}: a {block.language} block that is not in examples/: move it to a file "
                    "there and put <!-- example: examples/... --> before the block"
                )


def test_every_example_is_shown_or_named_by_a_doc() -> None:
    text = "\n".join(doc.read_text() for doc in examples.ALL_DOCS)
    for path in examples.files():
        name = examples.relative(path)
        inside = [parent for parent in path.parents if parent.is_relative_to(examples.EXAMPLES)]
        folders = [examples.relative(parent) + "/" for parent in inside]
        assert any(candidate in text for candidate in [name, *folders[:-1]]), (
            f"{name} is in no doc: show it (an example marker) or name it, or remove it"
        )


def test_the_links_of_the_user_docs_lead_to_files_and_headings() -> None:
    for doc in examples.USER_DOCS:
        for path, anchor in examples.links(doc):
            target = doc.parent / path
            if examples.relative(target) in MADE_ELSEWHERE:
                continue
            assert target.exists(), f"{examples.relative(doc)} links to {path}, which does not exist"
            if anchor and target.suffix == ".md":
                where = examples.relative(doc)
                assert anchor in examples.anchors(target), f"{where}: {path} has no heading #{anchor}"


def test_every_example_file_is_of_a_kind_the_tests_check() -> None:
    for path in examples.files():
        assert path.suffix in CHECKED_SUFFIXES, (
            f"{examples.relative(path)}: no test checks a {path.suffix or 'suffix-less'} file; "
            "add a check in tests/docs"
        )


@pytest.mark.parametrize("path", examples.by_suffix(".sh"), ids=examples.relative)
def test_a_shell_snippet_parses_and_names_files_that_exist(path: Path) -> None:
    parsed = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert parsed.returncode == 0, f"{examples.relative(path)}: {parsed.stderr}"
    for named in _PATH.findall(path.read_text()):
        assert (REPO_ROOT / named).exists(), f"{examples.relative(path)} names {named}, which does not exist"


@pytest.mark.parametrize("path", examples.by_suffix(".csv", ".jsonl"), ids=examples.relative)
async def test_a_recipient_list_file_loads_without_an_invalid_row(path: Path) -> None:
    source = lists.ListSource("csv" if path.suffix == ".csv" else "jsonl", text=_read(path))
    found, counts = await lists.load(source)
    assert found, f"{examples.relative(path)}: no recipient"
    assert counts.invalid == 0, f"{examples.relative(path)}: {[str(row) for row in counts.examples]}"


def _read(path: Path) -> str:
    return path.read_text()  # a few hundred bytes: no need for a thread


def _campaigns() -> list[tuple[Path, examples.Json, list[examples.Json]]]:
    """Every MailCampaign of examples/, with the objects of its namespace group."""
    grouped: dict[str, list[examples.Json]] = {}
    for path in examples.manifests():
        grouped.setdefault(examples.group(path), []).extend(examples.documents(path))
    return [
        (path, doc, grouped[examples.group(path)])
        for path in examples.manifests()
        for doc in examples.documents(path)
        if doc["kind"] == "MailCampaign"
    ]


async def test_every_campaign_renders_for_every_recipient_of_its_list() -> None:
    """The templates compile as the operator checks them, and each recipient's message renders as a
    sender renders it: a template error would otherwise show only at send time, as failed recipients."""
    rendered = 0
    for path, campaign, neighbours in _campaigns():
        where = f"{examples.relative(path)}: {campaign['metadata']['name']}"
        spec = MailCampaignSpec.model_validate(campaign["spec"])
        meta = {
            "uid": "0f6b3c1e-0000-4000-8000-000000000001",
            "namespace": "mail",
            "name": campaign["metadata"]["name"],
            "creationTimestamp": "2026-11-29T12:00:00Z",
        }
        candidate = wire.build_wire(meta, spec, chunk_size=512)
        wire.check(candidate)  # raises InvalidCampaign with the sender's reason
        source = lists.source_text(campaign, neighbours)
        if source is None:  # a URL: nothing to render here
            assert "url" in campaign["spec"]["recipients"], f"{where}: its list is not among the examples"
            continue
        recipients, counts = await lists.load(source)
        assert recipients and counts.invalid == 0, f"{where}: {[str(row) for row in counts.examples]}"
        compiled = CompiledCampaign(candidate)
        for index, recipient in enumerate(recipients):
            message = compiled.render(recipient, index)
            assert message, where
            rendered += 1
    assert rendered >= 15, f"only {rendered} messages rendered"
