"""What one template operation may build: the checks the sandbox runs *before* an operation runs.

Where it sits: sandbox.py calls these from its operators, filters, method calls and
outputs. They are pure: each looks at the operands and raises RenderLimitError when
the result would be bigger than MAX_VALUE characters (or MAX_INT_BITS, MAX_ITEMS).
Checking afterwards would be too late: `'a' * 10**9` allocates its gigabyte in one C
call that nothing interrupts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

MAX_VALUE = 1 << 20  # characters in any one value a template builds; also the cap on each body
MAX_INT_BITS = 4096  # about 1,230 decimal digits: any arithmetic a message needs, in microseconds
MAX_ITEMS = 100_000  # items in a list built by +, and parts from batch/slice (Jinja2's cap on range())
_MAX_DIGITS = len(str(MAX_VALUE))


class RenderLimitError(SecurityError):
    """A template tried to build too much; the message names the limit, for the failure reason."""


def too_big(what: str) -> RenderLimitError:
    return RenderLimitError(f"{what} would exceed {MAX_VALUE} characters")


_END = object()


def value_size(value: object, limit: int = MAX_VALUE) -> int:
    """About how many characters str(value) has, at least; counting stops once past `limit`."""
    total = 0
    stack: list[Iterator[object]] = [iter((value,))]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, str | bytes | bytearray):
            total += len(item) + 2
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 1
        elif isinstance(item, Namespace):  # its repr shows every attribute
            stack.append(iter(item._Namespace__attrs.items()))
        elif isinstance(item, Mapping):
            stack.append(iter(item.items()))
        elif isinstance(item, Collection) and not isinstance(item, range):
            stack.append(iter(item))
        total += 2
        if total > limit:
            break
    return total


def check_printable(value: object) -> None:
    """Printing a container builds its repr: refuses one over MAX_VALUE."""
    if not isinstance(value, str | int | float) and value_size(value) > MAX_VALUE:
        raise too_big(f"printing a {type(value).__name__}")


def check_width(what: str, width: object) -> None:
    if isinstance(width, int) and width > MAX_VALUE:
        raise too_big(f"{what} width {width}")


def check_format_spec(spec: str) -> None:
    """A str.format field's spec, such as '>100000000': its width and precision."""
    for number in re.findall(r"\d+", spec):
        if len(number) > _MAX_DIGITS or int(number) > MAX_VALUE:
            raise too_big(f"the format spec {spec[:40]!r}")


_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_percent(fmt: str, args: object) -> None:
    """`fmt % args`: widths and precisions, and what the arguments print as."""
    for field in _PERCENT_FIELD.findall(fmt):
        for number in field:
            if number == "*" or len(number) > _MAX_DIGITS or (number and int(number) > MAX_VALUE):
                raise too_big(f"the format {fmt[:40]!r}")
    if len(fmt) + value_size(args) > MAX_VALUE:
        raise too_big("formatting with %")


def _check_add(left: Any, right: Any) -> None:
    if isinstance(left, str | bytes) and isinstance(right, str | bytes):
        if len(left) + len(right) > MAX_VALUE:
            raise too_big("adding strings")
    elif (
        isinstance(left, list | tuple)
        and isinstance(right, list | tuple)
        and len(left) + len(right) > MAX_ITEMS
    ):
        raise RenderLimitError(f"a list over {MAX_ITEMS} items")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """The intercepted operators * ** + % (as string formatting)."""
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise RenderLimitError(f"a product over {MAX_INT_BITS} bits")
            return
        seq, count = (right, left) if isinstance(left, int) else (left, right)
        if isinstance(count, int) and count > 0 and isinstance(seq, str | bytes | list | tuple):
            size = len(seq) if isinstance(seq, str | bytes) else value_size(seq)
            if size * count > MAX_VALUE:
                raise too_big("repeating a value")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        # (bits - 1) * exponent is at most one bit short of the result's size, and never over it
        if right > 0 and abs(left) > 1 and (left.bit_length() - 1) * right >= MAX_INT_BITS:
            raise RenderLimitError(f"a power over {MAX_INT_BITS} bits")
    elif operator == "+":
        _check_add(left, right)
    elif operator == "%" and isinstance(left, str):
        check_percent(left, right)


def _check_replace(s: object, old: object, new: object, count: object = None) -> None:
    if isinstance(s, str | bytes) and isinstance(old, str | bytes) and isinstance(new, str | bytes):
        hits = len(s) + 1 if not old else s.count(old)  # type: ignore[arg-type]
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        if len(s) + hits * max(0, len(new) - len(old)) > MAX_VALUE:
            raise too_big("replace")


def check_join(sep: object, items: list[Any]) -> None:
    if len(items) > MAX_ITEMS:
        raise RenderLimitError(f"joining over {MAX_ITEMS} items")
    width = len(sep) if isinstance(sep, str | bytes) else value_size(sep)
    if width * len(items) + value_size(items) > MAX_VALUE:
        raise too_big("join")


# The checks below take the arguments of the filter they check, under the same names.


def _check_center(value: object, width: object = 80) -> None:
    check_width("center", width)


def _check_indent(s: object, width: object = 4, first: object = False, blank: object = False) -> None:
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if len(str(s)) + (str(s).count("\n") + 1) * pad > MAX_VALUE:
        raise too_big("indent")


def _check_wordwrap(
    s: object,
    width: object = 79,
    break_long_words: object = True,
    wrapstring: object = None,
    break_on_hyphens: object = True,
) -> None:
    # A line ends only where the next word does not fit, so two lines hold at least `width` characters.
    text = str(s)
    lines = 2 * len(text) // max(1, width if isinstance(width, int) else 1) + text.count("\n") + 1
    if len(text) + lines * (len(wrapstring) if isinstance(wrapstring, str) else 1) > MAX_VALUE:
        raise too_big("wordwrap")


def _check_format(value: object, *args: object, **kwargs: object) -> None:
    check_percent(str(value), kwargs or args)


def _check_batch(value: object, linecount: object, fill_with: object = None) -> None:
    if isinstance(linecount, int) and linecount > MAX_ITEMS:
        raise RenderLimitError(f"batch into over {MAX_ITEMS} parts")


def _check_slice(value: object, slices: object, fill_with: object = None) -> None:
    if isinstance(slices, int) and slices > MAX_ITEMS:
        raise RenderLimitError(f"slice into over {MAX_ITEMS} parts")


def _check_tojson(value: object, indent: object = None) -> None:
    if (isinstance(indent, int) and indent > 16) or (isinstance(indent, str) and len(indent) > 16):
        raise RenderLimitError("tojson indent over 16")


def _check_sum(iterable: object, attribute: object = None, start: object = 0) -> None:
    if not isinstance(start, int | float):
        raise RenderLimitError("sum adds numbers only (adding lists takes quadratic time)")


def _check_urlize(
    value: object,
    trim_url_limit: object = None,
    nofollow: object = False,
    target: object = None,
    rel: object = None,
    extra_schemes: object = None,
) -> None:
    # target and rel are repeated on every link found
    if any(isinstance(a, str) and len(a) > 256 for a in (target, rel)):
        raise RenderLimitError("urlize target or rel over 256 characters")


# Filters that take a width, count, separator or replacement (join is checked in sandbox.py,
# which must see its input first). Every filter's result is also checked afterwards.
FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _check_center,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "format": _check_format,
    "replace": _check_replace,
    "batch": _check_batch,
    "slice": _check_slice,
    "tojson": _check_tojson,
    "sum": _check_sum,
    "urlize": _check_urlize,
}


def check_method(owner: str | bytes | int, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A call of a str, bytes or int method; returns the arguments to call it with."""
    if name in ("center", "ljust", "rjust", "zfill", "to_bytes") and args:
        check_width(name, args[0])
    elif name == "expandtabs" and isinstance(owner, str | bytes):
        size = args[0] if args and isinstance(args[0], int) else 8
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        if len(owner) + tabs * size > MAX_VALUE:
            raise too_big("expandtabs")
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, *args[:3])
    elif name == "join" and args:
        items = list(args[0])  # it may be a generator: look at it once
        check_join(owner, items)
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping) and isinstance(owner, str):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        if len(owner) * longest > MAX_VALUE:
            raise too_big("translate")
    return args
