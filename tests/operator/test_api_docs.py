"""docs/api.md lists every field of both CRDs, with the CRDs' own types, defaults and descriptions."""

from __future__ import annotations

from tests.operator import api_reference


def test_the_field_tables_of_docs_api_md_are_the_crds() -> None:
    text = api_reference.DOC.read_text()
    for name in api_reference.TABLES:
        assert f"<!-- fields: {name} -->" in text, f"docs/api.md has no table for {name}"
    fix = ".venv/bin/python -m tests.operator.api_reference --write"
    assert api_reference.render(text) == text, f"docs/api.md is out of date with crds/: run `{fix}`"
