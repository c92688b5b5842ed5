"""The examples of examples/ and the user docs that embed them: what each file is, and the code blocks
of the docs with the example each one shows.

A doc embeds an example by a marker right before a fenced block:

    <!-- example: examples/campaigns/hello.yaml -->
    ```yaml
    ...the file, verbatim...
    ```

Every file under examples/ is found by a glob, so files added later (examples/seed/, the demo's
scenario) are checked like the rest: a YAML file of Kubernetes objects is applied to the cluster, a
YAML file without `kind` is a Helm values file, `.sh` is a shell snippet, `.csv`/`.jsonl` a
recipient list, `.md` a note. Anything else fails, so that a new kind of example gets a check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.harness.binaries import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
# The docs whose YAML and shell blocks must all be examples (the reference docs, api.md, chart.md and
# runbooks.md, keep their own placeholders such as NS and POOL).
USER_DOCS = [
    REPO_ROOT / "README.md",
    REPO_ROOT / "docs" / "install.md",
    REPO_ROOT / "docs" / "campaigns.md",
    REPO_ROOT / "docs" / "operations.md",
]
ALL_DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
EXAMPLE_LANGUAGES = {"yaml", "yml", "sh", "bash", "shell", "console"}
# examples/<folder>/ shares a namespace with the folders named here, as an application team's
# pools and campaigns share theirs; every other folder gets a namespace of its own.
NAMESPACE_GROUPS = {"pools": "team", "campaigns": "team"}

Json = dict[str, Any]
_MARKER = re.compile(r"^<!-- example: (\S+) -->$")
_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)\s*$")


def files() -> list[Path]:
    found = sorted(path for path in EXAMPLES.rglob("*") if path.is_file())
    assert found, f"no examples in {EXAMPLES}"
    return found


def relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def documents(path: Path) -> list[Json]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{relative(path)} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{relative(path)}: a document that is not a mapping"
    return docs


def is_yaml(path: Path) -> bool:
    return path.suffix in (".yaml", ".yml")


def is_manifest(path: Path) -> bool:
    """Kubernetes objects (every document has apiVersion and kind), or else a Helm values file."""
    docs = documents(path)
    objects = [doc for doc in docs if "apiVersion" in doc and "kind" in doc]
    assert not objects or len(objects) == len(docs), (
        f"{relative(path)} mixes Kubernetes objects with other documents"
    )
    return bool(objects)


def manifests() -> list[Path]:
    return [path for path in files() if is_yaml(path) and is_manifest(path)]


def values_files() -> list[Path]:
    return [path for path in files() if is_yaml(path) and not is_manifest(path)]


def by_suffix(*suffixes: str) -> list[Path]:
    return [path for path in files() if path.suffix in suffixes]


def group(path: Path) -> str:
    """The namespace group of an example: its folder under examples/ (see NAMESPACE_GROUPS)."""
    parts = path.relative_to(EXAMPLES).parts
    folder = parts[0] if len(parts) > 1 else "top"
    return NAMESPACE_GROUPS.get(folder, folder)


# -- the docs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str  # the lines between the fences, each ending in a newline
    example: str | None  # the path the marker before it names

    @property
    def where(self) -> str:
        return f"{relative(self.doc)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, each with the example marker right before it."""
    lines = doc.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, language = opening.groups()
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        assert end < len(lines), f"{relative(doc)}:{index + 1}: a code block that is never closed"
        marker = _MARKER.match(lines[index - 1].strip()) if index else None
        body = "".join(line + "\n" for line in lines[index + 1 : end])
        found.append(Block(doc, index + 1, language, body, marker.group(1) if marker else None))
        index = end + 1
    return found


def markers(doc: Path) -> list[tuple[int, str]]:
    """Every example marker of the doc, with its line (a marker must sit right before a block)."""
    return [
        (number, match.group(1))
        for number, line in enumerate(doc.read_text().splitlines(), start=1)
        if (match := _MARKER.match(line.strip()))
    ]


def links(doc: Path) -> list[tuple[str, str]]:
    """The doc's relative Markdown links as (path, anchor); an anchor alone is a link into the doc."""
    targets = re.findall(r"\]\(([^)\s]+)\)", doc.read_text())
    found = []
    for target in targets:
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        found.append((path or doc.name, anchor))
    return found


def anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives the doc's headings: lower case, punctuation dropped, spaces as '-'."""
    found = set()
    for line in doc.read_text().splitlines():
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(text.replace(" ", "-"))
    return found


_LANGUAGE = {".yaml": "yaml", ".yml": "yaml", ".sh": "sh", ".csv": "csv", ".jsonl": "json"}


def write(doc: Path) -> bool:
    """Put each marked example's file into the block after its marker (adding the block if there is
    none); True if the doc changed. `python -m tests.docs.examples` does it for every doc."""
    lines = doc.read_text().splitlines(keepends=True)
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        marker = _MARKER.match(line.strip())
        if not marker:
            continue
        path = REPO_ROOT / marker.group(1)
        opening = _FENCE.match(lines[index].rstrip("\n")) if index < len(lines) else None
        language = _LANGUAGE.get(path.suffix, "")
        if opening:
            fence, language = opening.groups()
            index += 1
            while index < len(lines) and lines[index].strip() != fence:
                index += 1
            index += 1
        out += [f"```{language}\n", path.read_text(), "```\n"]
    text = "".join(out)
    changed = text != doc.read_text()
    doc.write_text(text)
    return changed


if __name__ == "__main__":
    for doc in ALL_DOCS:
        if write(doc):
            print(f"wrote {relative(doc)}")
