"""Random recipient lists (csv and jsonl) together with what a correct loader makes of them.

Each list mixes valid rows with the odd things real lists hold: duplicates in another case,
addresses the sender refuses, names with control characters, quoted commas, quotes and line
breaks, a byte order mark, CRLF, blank lines, rows of empty fields, a wrong number of fields,
JSON that is not an object, over-long rows. The generator decides each row's fate as it writes
it, so the expectation is known without running the loader's logic.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from typing import Any

from mailtrain_operator.recipients.lines import MAX_LINE_BYTES

# Every one of these is refused by the sender's own check (a test holds them against it).
BAD_ADDRESSES = [
    "plainaddress",
    "a@b",
    "two words@example.org",
    "a@@example.org",
    "user@example.test",
    "@example.org",
    "user@",
    "a@-example.org",
    "jürgen@example.org",
    "user@exa_mple.org",
    "user@example..org",
    "a" * 65 + "@" + "b" * 250 + ".org",
]
TEXT = "abcXYZ 019.,;:\"'()!#=?\\ÄöüßéŁ€中文😀-_"
VALUE_TEXT = TEXT + "\n\t"  # vars may hold line breaks and tabs; names may not
VAR_NAMES = ["city", "order", "Plan", "x y", "größe", "ID"]
DOMAINS = ["example.org", "Example.COM", "mail.example.net", "xn--bcher-kva.example"]


@dataclass
class Expected:
    recipients: list[tuple[str, str | None, dict[str, Any] | None]] = field(default_factory=list)
    invalid_lines: list[int] = field(default_factory=list)
    duplicates: int = 0
    seen: set[str] = field(default_factory=set)
    addresses: list[str] = field(default_factory=list)  # every valid address written, for duplicates

    def valid(self, email: str, name: str | None, variables: dict[str, Any] | None) -> None:
        key = email.strip().lower()
        if key in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(key)
            self.recipients.append((email.strip(), (name or "").strip() or None, variables or None))
        self.addresses.append(email.strip())


def _text(rng: random.Random, alphabet: str, longest: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


def _address(rng: random.Random, expected: Expected) -> str:
    if expected.addresses and rng.random() < 0.2:  # an earlier one, in another case
        earlier = rng.choice(expected.addresses)
        return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in earlier)
    local = rng.choice(["reader", "a.b", "x+tag", "o'neil", "UPPER", "mixed_Case"]) + str(rng.randint(0, 300))
    padding = rng.choice(["", "", "", " ", "  "])
    return padding + f"{local}@{rng.choice(DOMAINS)}" + padding


def _name(rng: random.Random) -> str:
    return rng.choice(["", "Bob", "Doe, John", 'Jo "JJ" Smith', "  Müller  ", _text(rng, TEXT, 30)])


class CsvList:
    """A random csv list: `data` (bytes) and `expected`."""

    def __init__(self, rng: random.Random, rows: int) -> None:
        self.rng, self.expected = rng, Expected()
        variables = rng.sample(VAR_NAMES, rng.randint(0, 3))
        columns = ["email", *(["name"] if rng.random() < 0.7 else []), *variables]
        rng.shuffle(columns)
        self.columns = columns
        self.out = io.StringIO(newline="")
        self.terminator = rng.choice(["\n", "\r\n"])
        if rng.random() < 0.5:
            self.writer = csv.writer(self.out, lineterminator=self.terminator, quoting=csv.QUOTE_ALL)
        else:
            self.writer = csv.writer(self.out, lineterminator=self.terminator)  # quotes only where needed
        for _ in range(rng.randint(0, 2)):
            self.out.write(self.terminator)  # blank lines before the header
        self.writer.writerow([self._header_name(c) for c in columns])
        for _ in range(rows):
            self._row()
        text = self.out.getvalue()
        if rng.random() < 0.3:
            text = text.removesuffix(self.terminator)  # no line break after the last row
        self.data = (b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + text.encode()

    def _header_name(self, column: str) -> str:
        if column in ("email", "name"):
            return self.rng.choice([column, column.upper(), column.title(), f" {column} "])
        return column

    def _line(self) -> int:
        return self.out.getvalue().count("\n") + 1

    def _fields(self, email: str, name: str, variables: dict[str, str]) -> list[str]:
        values = {"email": email, "name": name, **variables}
        return [values[c] for c in self.columns]

    def _row(self) -> None:
        rng, expected = self.rng, self.expected
        kind = rng.choices(
            ["valid", "bad-address", "bad-name", "fields", "blank", "empty", "overlong"],
            weights=[70, 8, 4, 6, 5, 4, 3],
        )[0]
        line = self._line()
        email, name = _address(rng, expected), _name(rng)
        has_name = "name" in self.columns
        variables = {c: _text(rng, VALUE_TEXT, 12) for c in self.columns if c not in ("email", "name")}
        if kind == "blank":
            self.out.write(rng.choice(["", " "]) + self.terminator)
        elif kind == "empty":
            self.writer.writerow([""] * len(self.columns))
        elif kind == "bad-address":
            self.writer.writerow(self._fields(rng.choice(BAD_ADDRESSES), name, variables))
            expected.invalid_lines.append(line)
        elif kind == "bad-name" and has_name:
            bad = name + "a" + rng.choice(["\x07", "\n", "\x1b"]) + "x"  # inside: a name's ends are stripped
            self.writer.writerow(self._fields(email, bad, variables))
            expected.invalid_lines.append(line)
        elif kind == "fields" and len(self.columns) >= 2:
            fields = self._fields(email, name, variables)
            short = fields[:-1]
            blank = not "".join(short).strip()  # would be skipped as a blank row, not counted
            self.writer.writerow([*fields, "surplus"] if blank or rng.random() < 0.5 else short)
            expected.invalid_lines.append(line)
        elif kind == "overlong" and variables:
            # One line: a row whose over-long line is followed by more of its quoted value would
            # resume mid-value (documented), which is not what this row is about.
            variables = {k: v.replace("\n", " ") for k, v in variables.items()}
            variables[next(iter(variables))] = "ü" * (MAX_LINE_BYTES // 2 + 10)
            self.writer.writerow(self._fields(email, name, variables))
            expected.invalid_lines.append(line)
        else:
            fields = self._fields(email, name, variables)
            if rng.random() < 0.1:
                fields += [""] * rng.randint(1, 2)  # trailing empty fields, as spreadsheets write them
            self.writer.writerow(fields)
            expected.valid(email, name if has_name else None, variables)


class JsonlList:
    """A random jsonl list: `data` (bytes) and `expected`."""

    def __init__(self, rng: random.Random, rows: int) -> None:
        self.rng, self.expected = rng, Expected()
        self.terminator = rng.choice(["\n", "\r\n"])
        self.lines: list[str] = []
        for _ in range(rows):
            self._row()
        text = "".join(line + self.terminator for line in self.lines)
        if rng.random() < 0.3:
            text = text.removesuffix(self.terminator)
        self.data = (b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + text.encode()

    def _dumps(self, value: Any, ascii_only: bool = False) -> str:
        # Lone surrogates can only be written as \u escapes (they are not UTF-8).
        return json.dumps(value, ensure_ascii=ascii_only or self.rng.random() < 0.5)

    def _row(self) -> None:
        rng, expected = self.rng, self.expected
        kind = rng.choices(
            ["valid", "bad-address", "bad-name", "no-email", "not-json", "not-object", "bad-vars", "blank"],
            weights=[70, 6, 4, 3, 4, 3, 3, 5],
        )[0]
        line = len(self.lines) + 1
        email, name = _address(rng, expected), _name(rng)
        extra = {k: _text(rng, VALUE_TEXT, 8) for k in rng.sample(VAR_NAMES, rng.randint(0, 2))}
        values: list[Any] = [1, 2.5, None, True, ["a", "b"], {"k": "v"}, "ü"]
        own = {k: rng.choice(values) for k in rng.sample(VAR_NAMES, 2)}
        row: dict[str, Any] = {"email": email, **extra}
        if rng.random() < 0.7:
            row["name"] = name
        if rng.random() < 0.5:
            row["vars"] = own
        if kind == "blank":
            self.lines.append(rng.choice(["", "   ", "\t"]))
            return
        if kind == "valid":
            self.lines.append(self._dumps(row))
            merged = {**extra, **row.get("vars", {})}
            expected.valid(email, row.get("name"), merged)
            return
        if kind == "bad-address":
            row["email"] = rng.choice(BAD_ADDRESSES)
        elif kind == "bad-name":
            row["name"] = rng.choice([name + "a\x07x", "\ud800", 42, name + "a\nx"])
        elif kind == "no-email":
            row.pop("email")
        elif kind == "bad-vars":
            row["vars"] = rng.choice([["a"], "text", 3, {"k": "\udfff"}])
        self.lines.append(
            rng.choice(['{"email": "a@example.org"', "email,name", "{'email': 'a@example.org'}"])
            if kind == "not-json"
            else self._dumps(rng.choice([[email], email, 42, None]))
            if kind == "not-object"
            else self._dumps(row, ascii_only=True)
        )
        expected.invalid_lines.append(line)


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    """`data` cut at random places (through multi-byte characters too), as a network delivers it."""
    cuts, at = [], 0
    while at < len(data):
        size = rng.choice([1, 2, 3, 7, 64, 1000, 4096, 70_000])
        cuts.append(data[at : at + size])
        at += size
    return cuts
