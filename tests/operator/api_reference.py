"""The field tables of docs/api.md, written from the CRDs, so the reference cannot drift from the schema.

    .venv/bin/python -m tests.operator.api_reference           print the tables
    .venv/bin/python -m tests.operator.api_reference --write   rewrite them in docs/api.md

Each table sits between `<!-- fields: Kind.part -->` and `<!-- end fields -->`; the rest of
docs/api.md is written by hand. tests/operator/test_api_docs.py fails when a table is stale.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from tests.harness.binaries import REPO_ROOT
from tests.operator.conftest import schema

DOC = REPO_ROOT / "docs" / "api.md"
TABLES = ("SenderPool.spec", "SenderPool.status", "MailCampaign.spec", "MailCampaign.status")
_BLOCK = re.compile(r"(<!-- fields: (\S+) -->\n)(.*?)(<!-- end fields -->)", re.S)


def _type(node: dict[str, Any]) -> str:
    kind = node.get("type", "")
    if "enum" in node:
        text = " \\| ".join(f"`{value}`" for value in node["enum"])
    elif node.get("format") == "date-time":
        text = "time (RFC 3339)"
    elif kind == "array":
        text = f"list of {_type(node['items'])}"
    elif kind == "object" and isinstance(node.get("additionalProperties"), dict):
        text = f"map of {_type(node['additionalProperties'])}"
    else:
        text = {"object": "object", "integer": "integer", "number": "number", "boolean": "boolean"}.get(
            kind, kind
        )
    bounds = []
    if "minimum" in node and "maximum" in node:
        bounds.append(f"{node['minimum']} to {node['maximum']}")
    elif "minimum" in node:
        bounds.append(f"≥ {node['minimum']}")
    if "minLength" in node:
        bounds.append(f"{node['minLength']} to {node.get('maxLength', '…')} chars")
    elif "maxLength" in node:
        bounds.append(f"≤ {node['maxLength']} chars")
    for key, unit in (("maxItems", "items"), ("maxProperties", "entries")):
        if key in node:
            bounds.append(f"≤ {node[key]} {unit}")
    return text + (f", {', '.join(bounds)}" if bounds else "")


def _json(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    default = f"`{_json(node['default'])}`" if "default" in node else ("required" if required else "")
    description = str(node.get("description", "")).replace("|", "\\|").replace("\n", " ")
    rows = [f"| `{path}` | {_type(node)} | {default} | {description} |"]
    children = node.get("properties") or node.get("items", {}).get("properties")
    if children:
        inner = node if "properties" in node else node["items"]
        prefix = path if "properties" in node else f"{path}[]"
        for name, child in children.items():
            rows += _rows(child, f"{prefix}.{name}", name in inner.get("required", []))
    return rows


def table(name: str) -> str:
    kind, part = name.split(".")
    root = schema(kind)["properties"][part]
    rows = []
    for field, child in root.get("properties", {}).items():
        rows += _rows(child, field, field in root.get("required", []))
    return "| field | type | default | meaning |\n| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"


def render(text: str) -> str:
    """docs/api.md with every table rewritten from the CRDs."""
    return _BLOCK.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(4), text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DOC.write_text(render(DOC.read_text()))
    else:
        print("\n".join(f"<!-- fields: {name} -->\n{table(name)}<!-- end fields -->\n" for name in TABLES))
