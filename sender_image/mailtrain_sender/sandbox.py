"""The template sandbox: Jinja2's immutable sandbox, with what a render may build bounded.

Where it sits: wire_checks.py compiles a campaign's templates here once; render.py
renders them per recipient, possibly in several threads at once.

Jinja2's sandbox keeps templates away from Python's internals but not from memory:
`{{ 'a' * 10**9 }}` allocates a gigabyte in one C call, which no time limit can
interrupt. Two layers bound it:

- Before each operation that can build a value bigger than its operands, limits.py
  checks the result against MAX_VALUE: the operators * ** + % (intercepted binops)
  and ~ (rewritten into `_concat`), every filter, str/bytes/int method calls,
  str.format fields, and printing a container.
- A budget per template render bounds what piles up across operations: characters
  built, or scanned by a method or filter (MAX_WORK), and steps (MAX_STEPS: loop
  iterations, weighted by the outputs in the loop's body, and calls). Loops are
  rewritten to pay per iteration, so the budget also bounds how much one render
  yields. Not charged: comparisons and `in`, which Jinja2 cannot intercept.

The budget lives on the render's EvalContext, which Jinja2 creates afresh for every
render: renders in different threads share nothing. Exceeding anything raises
RenderLimitError (a SecurityError). The sandbox is the immutable one, so templates
cannot grow lists or alter a recipient's vars either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from jinja2 import Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import _PassArg, pass_context, pass_eval_context
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup

from mailtrain_sender.limits import (
    FILTER_CHECKS,
    MAX_VALUE,
    RenderLimitError,
    check_binop,
    check_format_spec,
    check_join,
    check_method,
    check_printable,
    too_big,
    value_size,
)

MAX_WORK = 32 << 20  # characters built (or scanned by methods and filters) by one template render
# Steps per template render: a template looping over a thousand order lines uses a few ten thousand;
# 250,000 take well under a second.
MAX_STEPS = 250_000
SHORT = 32  # printed strings up to this long are not charged: MAX_STEPS bounds how many are printed


class _Budget:
    __slots__ = ("steps", "work")

    def __init__(self) -> None:
        self.work = 0
        self.steps = 0


def _budget(eval_ctx: EvalContext) -> _Budget:
    spent = eval_ctx.__dict__
    budget = spent.get("mailtrain_budget")
    if budget is None:
        budget = spent["mailtrain_budget"] = _Budget()
    return cast(_Budget, budget)


def charge(eval_ctx: EvalContext, chars: int) -> None:
    budget = _budget(eval_ctx)
    budget.work += chars
    if budget.work > MAX_WORK:
        raise RenderLimitError(f"the template built more than {MAX_WORK} characters for one message")


def _too_many_steps() -> RenderLimitError:
    return RenderLimitError(f"the template ran more than {MAX_STEPS} steps (loop iterations and calls)")


def _check_result(eval_ctx: EvalContext, result: object) -> Any:
    if isinstance(result, str | bytes):
        if len(result) > MAX_VALUE:
            raise too_big("the result")
        charge(eval_ctx, len(result))
    elif isinstance(result, list | tuple | dict | set):
        if value_size(result) > MAX_VALUE:
            raise too_big(f"the {type(result).__name__}")
        charge(eval_ctx, len(result))
    return result


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with the checks of limits.py before it and a check of its result after it."""
    takes = _PassArg.from_obj(func)  # what Jinja2 would have passed it first, if anything
    check = FILTER_CHECKS.get(name)

    @pass_context
    @functools.wraps(func)
    def bounded(context: Context, *args: Any, **kwargs: Any) -> Any:
        if name == "join" and args:
            args = (list(args[0]), *args[1:])  # join's input may be a generator: look at it once
            check_join(args[1] if len(args) > 1 else kwargs.get("d", ""), args[0])
        for arg in (*args, *kwargs.values()):
            check_printable(arg)
        if check is not None:
            check(*args, **kwargs)
        if args and isinstance(args[0], str):  # a filter scans its input: `big|wordcount` in a loop costs
            charge(context.eval_ctx, len(args[0]))
        if takes is _PassArg.context:
            args = (context, *args)
        elif takes is _PassArg.eval_context:
            args = (context.eval_ctx, *args)
        elif takes is _PassArg.environment:
            args = (context.environment, *args)
        return _check_result(context.eval_ctx, func(*args, **kwargs))

    return bounded


@pass_eval_context
def counted(eval_ctx: EvalContext, iterable: Iterable[Any], steps: int = 1, chars: int = 0) -> Iterator[Any]:
    """The items of `iterable`, each charged `steps` and `chars` (every {% for %} goes through this).

    A loop's steps are 1 + the outputs in its body and its chars the literal text there, so the
    budget bounds how many pieces, and how much literal text, a render yields.
    """
    budget = _budget(eval_ctx)
    for item in iterable:
        budget.steps += steps
        budget.work += chars
        if budget.steps > MAX_STEPS:
            raise _too_many_steps()
        if budget.work > MAX_WORK:
            charge(eval_ctx, 0)  # raises
        yield item


@pass_eval_context
def _concat(eval_ctx: EvalContext, operands: list[Any]) -> str:
    """`a ~ b`: the operands' sizes are checked before they are converted and joined."""
    if sum(value_size(x) for x in operands) > MAX_VALUE:
        raise too_big("concatenating with ~")
    joined: str = markup_join(operands) if eval_ctx.autoescape else str_join(operands)
    charge(eval_ctx, len(joined))
    return joined


def _join(pieces: Iterable[str]) -> str:
    """environment.concat: the output of macros and blocks. Joined before it is checked, because
    the budget already bounds what its pieces add up to."""
    joined = "".join(pieces)
    if len(joined) > MAX_VALUE:
        raise too_big("the output of a block or macro")
    return joined


def _charged_join(eval_ctx: EvalContext, pieces: Iterable[str]) -> str:
    joined = _join(pieces)
    charge(eval_ctx, len(joined))  # a {% set %} block in a loop builds its value anew each time
    return joined


class _BoundLoopsAndConcats(NodeTransformer):
    """Every {% for %} iterates through `counted`, and every `~` goes through `_concat`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = cast(nodes.For, self.generic_visit(node))
        found = [n for child in node.body for n in (child, *child.find_all(nodes.Output))]
        pieces = [piece for output in found if isinstance(output, nodes.Output) for piece in output.nodes]
        literal = sum(len(p.data) for p in pieces if isinstance(p, nodes.TemplateData))
        charges: list[nodes.Expr] = [nodes.Const(1 + len(pieces)), nodes.Const(literal)]
        node.iter = nodes.Filter(node.iter, "_counted", charges, [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = cast(nodes.Concat, self.generic_visit(node))
        operands = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(operands, "_concat", [], [], None, None, lineno=node.lineno)


class _BoundedFormatter(SandboxedFormatter):
    """str.format: each field's spec is checked, and the fields of one call add up to MAX_VALUE at most."""

    built = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self.built = 0
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        check_printable(value)
        formatted = super().format_field(value, format_spec)
        self.built += len(formatted)
        if self.built > MAX_VALUE:
            raise too_big("str.format")
        return formatted


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


def charge_printed(eval_ctx: EvalContext, value: object) -> None:
    """Printing `value` builds its str(): checked against MAX_VALUE and charged."""
    size = len(value) if isinstance(value, str) else value_size(value)
    if size > MAX_VALUE:
        raise too_big(f"printing a {type(value).__name__}")
    charge(eval_ctx, size)


@pass_eval_context
def _finalize(eval_ctx: EvalContext, value: Any) -> Any:
    """Every {{ }} output: what printing it builds is paid for. Returns the value (escape() or str()
    follows; str() here would unmark Markup)."""
    if value.__class__ is not str:
        charge_printed(eval_ctx, value)
    elif len(value) > SHORT:  # printed in a loop, the same string is copied into the output each time
        charge(eval_ctx, len(value))
    return value


class _BoundedCodeGenerator(CodeGenerator):
    """Two changes to the generated Python, for speed; the result is the same as Jinja2's own.

    `{{ x }}` prints a short string without a call, the usual case, instead of
    `str(environment.finalize(context.eval_ctx, x))`, a call per output that costs a
    tenth of a message's rendering time (with `escape` for `str` where autoescaping):

        (_o if (_o := x).__class__ is str and len(_o) <= 32 else str(environment.finalize(ctx, _o)))

    And only templates with macros or blocks bind `concat` to the charged join. Were
    Jinja2 to rename these hooks, the generated code would be its own again: slower,
    equally bounded.
    """

    def _inline(self, frame: Frame) -> bool:
        return not frame.eval_ctx.volatile and self.environment.finalize is _finalize

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if not self._inline(frame):
            super()._output_child_pre(node, frame, finalize)
            return
        self.write("escape(" if frame.eval_ctx.autoescape else "(")
        self.write("_o if (_o := ")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if not self._inline(frame):
            super()._output_child_post(node, frame, finalize)
            return
        slow = "environment.finalize(context.eval_ctx, _o)"
        slow = slow if frame.eval_ctx.autoescape else f"str({slow})"
        self.write(f").__class__ is str and len(_o) <= {SHORT} else {slow})")

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        blocks = (nodes.Macro, nodes.CallBlock, nodes.AssignBlock, nodes.FilterBlock, nodes.Block)
        self._charged_join = any(True for _ in node.find_all(blocks))
        super().visit_Template(node, frame)

    def write_commons(self) -> None:
        super().write_commons()
        if getattr(self, "_charged_join", True):
            self.writeline("concat = environment.charged_join(context.eval_ctx)")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the bounds above; compile with `compile_template`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator
    concat = staticmethod(_join)

    def __init__(self, *, autoescape: bool, finalize: Callable[..., Any] | None = None) -> None:
        super().__init__(autoescape=autoescape, finalize=finalize or _finalize)
        self.globals.pop("lipsum", None)  # generates up to n paragraphs: nothing a mail needs
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters["_counted"] = counted
        self.filters["_concat"] = _concat

    @staticmethod
    def charged_join(eval_ctx: EvalContext) -> Callable[[Iterable[str]], str]:
        return functools.partial(_charged_join, eval_ctx)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        result = self.binop_table[operator](left, right)
        if isinstance(result, str | bytes | list | tuple):
            charge(context.eval_ctx, len(result))
        return result

    def call(__self, __context: Context, __obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget(__context.eval_ctx)
        budget.steps += 1
        if budget.steps > MAX_STEPS:
            raise _too_many_steps()
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (counted(__context.eval_ctx, args[0]), *args[1:])
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes | int):
            args = check_method(owner, getattr(__obj, "__name__", ""), args)
            if not isinstance(owner, int):  # a method scans its string: `big.count(x)` in a loop costs
                budget.work += len(owner)
        return _check_result(__context.eval_ctx, super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:
            return None
        owner: str = value.__self__
        formatter: _BoundedFormatter
        if isinstance(owner, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=owner.escape)
        else:
            formatter = _BoundedFormatter(self)
        str_type, is_format_map = type(owner), value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:  # the same argument checks as Jinja2's own wrapper
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            return str_type(formatter.vformat(owner, args, kwargs))

        return functools.update_wrapper(wrapper, value)

    def compile_template(self, source: str) -> Template:
        """Parse, make loops pay per iteration and `~` check its operands, compile."""
        tree = _BoundLoopsAndConcats().visit(self.parse(source))
        tree.set_environment(self)
        return self.template_class.from_code(self, self.compile(tree), self.make_globals(None), None)
