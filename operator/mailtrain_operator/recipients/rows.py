"""Rows → recipients: the checks every row passes, and the csv and jsonl parsers. Pure, no I/O.

A row is judged by the sender's own functions (`check_recipient`, `addresses.normalize`), so a
row the operator publishes is one the sender can address, and a row it drops is one the sender
would have recorded invalid. The result of a row is `Valid` (the recipient as written, and the
key it is deduplicated by) or `Invalid` (the line it starts on, and why, in words that quote at
most a character of the row: the list may come from a Secret).

Both parsers take lines (see lines.py) in any pieces and return the rows those lines complete.
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from mailtrain_operator.recipients.errors import BAD_HEADER, SourceError
from mailtrain_operator.recipients.lines import MAX_LINE_BYTES, OVERLONG, Line
from mailtrain_sender.addresses import InvalidAddressError, normalize
from mailtrain_sender.layout import Recipient
from mailtrain_sender.render import InvalidRecipientError, check_recipient

MAX_ROW_CHARS = MAX_LINE_BYTES  # a csv row, with the line breaks inside its quoted values


class Valid(NamedTuple):
    recipient: Recipient
    key: str  # the normalized address in lower case: equal keys are the same mailbox


@dataclass(frozen=True, slots=True)
class Invalid:
    line: int  # where the row starts (for inline recipients: the item's number, from 1)
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


Row = Valid | Invalid


def check_row(email: object, name: object, variables: object, line: int) -> Row:
    """One row's fields, as the source gave them → Valid or Invalid."""
    if not isinstance(email, str):
        return Invalid(line, "no email" if email is None else f"email is a {_json_type(email)}, not text")
    if not (name is None or isinstance(name, str)):
        return Invalid(line, f"name is a {_json_type(name)}, not text")
    if not (variables is None or isinstance(variables, dict)):
        return Invalid(line, f"vars is a {_json_type(variables)}, not an object")
    return check_text_row(email, name, variables, line)


def check_text_row(email: str, name: str | None, variables: dict[str, Any] | None, line: int) -> Row:
    """check_row for fields already known to be text (csv)."""
    email = email.strip()
    if not email:
        return Invalid(line, "the email is empty")
    recipient = Recipient(email, (name.strip() or None) if name else None, variables or None)
    try:
        check_recipient(recipient)
        key = normalize(email).lower()  # ASCII (no SMTPUTF8): lower() is the whole case folding
    except (InvalidRecipientError, InvalidAddressError) as exc:
        return Invalid(line, str(exc))
    return Valid(recipient, key)


def _json_type(value: object) -> str:
    names = {bool: "boolean", int: "number", float: "number", list: "list", dict: "object", str: "string"}
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)


def inline_rows(items: Iterable[tuple[object, object, object]]) -> list[Row]:
    """(email, name, vars) of the CRD's inline list; `line` is the item's number, from 1."""
    return [check_row(email, name, variables, n) for n, (email, name, variables) in enumerate(items, 1)]


class JsonlRows:
    """One JSON object per line: `email`, optional `name` and `vars`; any other key is a var too
    (as a csv column would be), and `vars` wins a clash. Blank lines are skipped."""

    def __init__(self) -> None:
        self._line = 0

    def push(self, lines: Iterable[Line], *, final: bool = False) -> list[Row]:
        rows: list[Row] = []
        for text in lines:
            self._line += 1
            if text is OVERLONG:
                rows.append(Invalid(self._line, f"the line is longer than {MAX_LINE_BYTES} bytes"))
            elif isinstance(text, str) and text and not text.isspace():
                rows.append(self._row(text))
        return rows

    def _row(self, text: str) -> Row:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            where = (
                "at the end of the line" if exc.pos >= len(text.rstrip()) else f"at character {exc.pos + 1}"
            )
            return Invalid(self._line, f"not JSON: {exc.msg} {where}")
        except (ValueError, RecursionError) as exc:  # too many digits; nested too deep
            return Invalid(self._line, f"not usable JSON: {type(exc).__name__}")
        if not isinstance(value, dict):
            return Invalid(self._line, f"a JSON {_json_type(value)}, not an object")
        email, name, variables = value.pop("email", None), value.pop("name", None), value.pop("vars", None)
        if value and (variables is None or isinstance(variables, dict)):
            variables = {**value, **(variables or {})}
        return check_row(email, name, variables, self._line)


class _Columns(NamedTuple):
    width: int
    email: int
    name: int | None
    variables: list[tuple[int, str]]


class _RowTooLong(Exception):
    pass


class _LineFeed:
    """The csv reader's input: lines pushed so far. Running dry is not the end of the list, so it
    is noted (`starved`), and the lines of a row cut short can be put back for the next push."""

    def __init__(self) -> None:
        self.waiting: deque[Line] = deque()
        self.taken: list[Line] = []
        self.taken_chars = 0
        self.starved = False

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if not self.waiting:
            self.starved = True
            raise StopIteration
        line = self.waiting.popleft()
        self.taken.append(line)
        if not isinstance(line, str):  # OVERLONG
            raise _RowTooLong
        self.taken_chars += len(line)
        if self.taken_chars > MAX_ROW_CHARS:
            raise _RowTooLong
        return line

    def start_row(self) -> None:
        self.taken.clear()
        self.taken_chars = 0
        self.starved = False

    def put_back(self) -> None:
        self.waiting.extendleft(reversed(self.taken))
        self.start_row()


class CsvRows:
    """RFC 4180 csv (commas, double quotes, line breaks inside quotes) through the stdlib reader.

    The first row that is not blank is the header: it must name an `email` column, may name a
    `name` column (both found case-insensitively), and every other named column is a var, as
    text. A row must have as many fields as the header (fields beyond it may be empty, as some
    spreadsheets write them). Blank lines and rows whose fields are all empty are skipped.
    """

    def __init__(self) -> None:
        self._feed = _LineFeed()
        self._reader = csv.reader(self._feed, strict=False)
        self._columns: _Columns | None = None
        self._line = 0  # lines that made up the rows returned so far

    def push(self, lines: Iterable[Line], *, final: bool = False) -> list[Row]:
        feed = self._feed
        feed.waiting.extend(lines)
        rows: list[Row] = []
        while feed.waiting:
            feed.start_row()
            start = self._line + 1
            try:
                fields: list[str] | None = next(self._reader)
            except StopIteration:
                fields = None
            except _RowTooLong:
                rows.append(self._malformed(start, f"is longer than {MAX_ROW_CHARS} characters"))
                continue
            except csv.Error as exc:
                rows.append(self._malformed(start, _csv_error(exc)))
                continue
            if feed.starved and not final:  # a quoted value goes on in lines not pushed yet
                feed.put_back()
                break
            if feed.starved and feed.taken:
                rows.append(self._malformed(start, 'has a quoted value that is not closed (a " is missing)'))
                continue
            self._line += len(feed.taken)
            if fields is not None and (row := self._row(fields, start)) is not None:
                rows.append(row)
        if final and self._columns is None:
            raise SourceError(BAD_HEADER, f"the csv list has no header row; {_hint([''])}")
        return rows

    def _malformed(self, start: int, why: str) -> Invalid:
        """A row the csv reader could not take apart; reading goes on at the next line."""
        self._line += len(self._feed.taken)
        if self._columns is None:
            raise SourceError(BAD_HEADER, f"the csv header (line {start}) {why}")
        return Invalid(start, f"the row {why}")

    def _row(self, fields: list[str], line: int) -> Row | None:
        columns = self._columns
        if columns is None:
            if _blank(fields):
                return None
            self._columns = header(fields, line)
            return None
        if len(fields) != columns.width:
            if _blank(fields):
                return None
            if len(fields) < columns.width or not _blank(fields[columns.width :]):
                return Invalid(
                    line,
                    f"the row has {len(fields)} fields where the header has {columns.width} "
                    "(a value with a comma needs double quotes)",
                )
        email = fields[columns.email]
        if (not email or email.isspace()) and _blank(fields):
            return None
        variables = {name: fields[i] for i, name in columns.variables}
        name = fields[columns.name] if columns.name is not None else None
        return check_text_row(email, name, variables, line)


def _blank(fields: list[str]) -> bool:
    return not "".join(fields).strip()


def header(fields: list[str], line: int) -> _Columns:
    """The columns a header row names; SourceError(BadHeader) if it names no email column or a
    column twice. The message describes the row without quoting it (it may come from anywhere)."""
    names = [field.strip() for field in fields]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name:
            if name.casefold() in seen:
                raise SourceError(
                    BAD_HEADER,
                    f"the csv header (line {line}) names column {index + 1} like column "
                    f"{seen[name.casefold()] + 1}; give every column its own name",
                )
            seen[name.casefold()] = index
    if "email" not in seen:
        raise SourceError(BAD_HEADER, f"the csv header (line {line}) has no email column; {_hint(names)}")
    email_column, name_column = seen.pop("email"), seen.pop("name", None)
    return _Columns(len(fields), email_column, name_column, [(i, names[i]) for i in sorted(seen.values())])


def _csv_error(exc: csv.Error) -> str:
    if "new-line character" in str(exc):
        return "has a carriage return (CR) outside double quotes; lines must end with LF or CRLF"
    return f"is not csv ({exc})"


def _hint(names: list[str]) -> str:
    first = names[0]
    if "\x00" in first:
        return "the list looks like UTF-16 text; save it as UTF-8 (in Excel: CSV UTF-8)"
    if len(names) == 1 and (";" in first or "\t" in first):
        return "columns must be separated by commas, not semicolons or tabs"
    if first.startswith("<"):
        return "the list looks like HTML, not csv"
    return "the first row must name the columns, e.g. email,name (a var column may follow)"


def as_dict(row: Valid) -> dict[str, Any]:
    """A recipient as the CRD's inline item would write it (for tests and messages)."""
    r = row.recipient
    return {"email": r.email, **({"name": r.name} if r.name else {}), **({"vars": r.vars} if r.vars else {})}
