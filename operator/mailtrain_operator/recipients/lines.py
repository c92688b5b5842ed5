"""Bytes as they arrive (a download's chunks, a ConfigMap value) → lines of UTF-8 text.

Pure and incremental: `feed` takes any piece of bytes and returns the lines it completed, so a
list is never in memory whole. Lines are split at LF only (CRLF keeps its CR, which both
parsers accept) and keep their LF, because the csv module needs it to keep a line break inside
a quoted value. Splitting bytes at LF is safe in UTF-8: no multi-byte character contains 0x0A.

- A UTF-8 byte order mark at the very start is dropped (Excel writes one).
- Bytes that are not UTF-8 stop the list with a SourceError naming the line: a list saved in
  another encoding is wrong everywhere, not in one row, and dropping its rows one by one would
  hide that.
- A line longer than MAX_LINE_BYTES is not kept: it comes out as OVERLONG, which the parsers
  count as one invalid row, and reading resumes after its LF. So a list without line breaks
  costs no more memory than one line.
"""

from __future__ import annotations

import codecs
from typing import Final

from mailtrain_operator.recipients.errors import NOT_UTF8, SourceError

MAX_LINE_BYTES = 65_536


class _Overlong:
    def __repr__(self) -> str:
        return "OVERLONG"


OVERLONG: Final = _Overlong()
Line = str | _Overlong

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class LineSplitter:
    """Feed bytes, take lines. `lines_done` counts the lines handed out (an OVERLONG is one)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._pending = bytearray()
        self._skipping = False  # inside an over-long line, until its LF
        # An over-long line is not kept, but still checked: whether a list is UTF-8 must not
        # depend on where its pieces were cut.
        self._skipped = codecs.getincrementaldecoder("utf-8")()
        self._started = False  # the first bytes (and so a byte order mark) have been seen
        self.lines_done = 0

    def feed(self, data: bytes) -> list[Line]:
        if not self._started:
            if len(self._pending) + len(data) < len(_BOM):  # too short to tell yet
                self._pending += data
                return []
            data, self._pending = bytes(self._pending) + data, bytearray()
            self._started = True
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
            elif data.startswith(_UTF16_BOMS):
                raise SourceError(NOT_UTF8, "the list is UTF-16 text; save it as UTF-8 (in Excel: CSV UTF-8)")
        lines: list[Line] = []
        end = data.rfind(b"\n")
        if end < 0:
            self._take_partial(data, lines)
            return lines
        start = 0
        if self._skipping:  # the rest of an over-long line, up to its LF
            start = data.index(b"\n") + 1
            self._skip(data[:start], final=True)
            self._skipping = False
        if self._pending:
            first_end = data.index(b"\n", start) + 1
            self._pending += data[start:first_end]
            start = first_end
            whole, self._pending = bytes(self._pending), bytearray()
            self._add_block(whole, lines)
        self._add_block(data[start : end + 1], lines)
        self._take_partial(data[end + 1 :], lines)
        return lines

    def finish(self) -> list[Line]:
        """The last line, if the list does not end with a line break."""
        lines: list[Line] = []
        if self._skipping:
            self._skip(b"", final=True)
        if not self._started:
            data, self._pending = bytes(self._pending), bytearray()
            self._started = True
            self._take_partial(data.removeprefix(_BOM), lines)
        if self._pending:
            whole, self._pending = bytes(self._pending), bytearray()
            self._add_block(whole, lines)
        return lines

    def _take_partial(self, data: bytes, lines: list[Line]) -> None:
        """Keep the start of a line whose LF has not come yet, unless it is already too long."""
        if self._skipping:
            self._skip(data, final=False)
            return
        self._pending += data
        if len(self._pending) > self._max:
            lines.append(OVERLONG)
            self.lines_done += 1
            self._skipping = True
            self._skip(bytes(self._pending), final=False)
            self._pending = bytearray()

    def _skip(self, data: bytes, *, final: bool) -> None:
        """Check a piece of the over-long line `lines_done` and forget it."""
        try:
            self._skipped.decode(data, final)
        except UnicodeDecodeError as exc:
            raise _not_utf8(self.lines_done, exc.object[exc.start]) from None
        if final:
            self._skipped.reset()

    def _too_long(self, line: str) -> bool:
        # A character is 1 to 4 bytes: encode only when the length alone cannot tell.
        return len(line) > self._max or (4 * len(line) > self._max and len(line.encode()) > self._max)

    def _add_block(self, block: bytes, lines: list[Line]) -> None:
        """Whole lines (each ending with LF, except the list's last one) → text."""
        if not block:
            return
        try:
            text = block.decode()
        except UnicodeDecodeError as exc:
            raise _not_utf8(
                self.lines_done + block.count(b"\n", 0, exc.start) + 1, block[exc.start]
            ) from None
        parts = text.split("\n")
        last = parts.pop()  # "" when the block ends with LF, else the list's unterminated last line
        # A line that came whole in one block can be too long as well (no piece of it was pending).
        lines.extend(OVERLONG if self._too_long(part) else part + "\n" for part in parts)
        if last:
            lines.append(OVERLONG if self._too_long(last) else last)
        self.lines_done += len(parts) + (1 if last else 0)


def _not_utf8(line: int, byte: int) -> SourceError:
    return SourceError(
        NOT_UTF8,
        f"line {line} is not UTF-8 text (byte 0x{byte:02X}); save the list as UTF-8 (in Excel: CSV UTF-8)",
    )
