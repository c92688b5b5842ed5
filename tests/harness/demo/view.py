"""Draws the demo with rich: the live view (campaigns, sender pods, the pool's rate against its throttle)
and the summary at the end. Everything drawn comes from model.py's ViewModel and Summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tests.harness.demo.model import Summary, ViewModel

PHASE_STYLE = {"Completed": "green", "Sending": "cyan", "Failed": "red", "Paused": "yellow"}


def _justify(column: str) -> Literal["left", "right"]:
    return "left" if column in ("campaign", "phase", "progress") else "right"


def _bar(done: float, total: float) -> ProgressBar:
    """A bar as wide as its column gives it: on a narrow terminal the bars shrink, and the names and
    figures beside them stay whole."""
    return ProgressBar(total=max(total, 1), completed=min(done, max(total, 1)), width=None)


def live(model: ViewModel | None, mode: str, note: str = "") -> RenderableType:
    if model is None:
        return Panel(Text(note or "waiting for the campaigns ..."), title=f"make demo ({mode})")
    campaigns = Table(expand=True, box=None, pad_edge=False, collapse_padding=True)
    for column in ("campaign", "phase", "progress", "done", "sent", "failed", "rate"):
        bar = column == "progress"  # takes what the others leave
        campaigns.add_column(
            column,
            justify=_justify(column),
            no_wrap=True,
            ratio=1 if bar else None,
            min_width=6 if bar else None,
        )
    for c in model.campaigns:
        campaigns.add_row(
            c.name,
            Text(c.phase, style=PHASE_STYLE.get(c.phase, "")),
            _bar(c.done, c.total),
            f"{c.done}/{c.total or '?'}",
            str(c.sent),
            Text(str(c.failed), style="red" if c.failed else ""),
            f"{c.rate:5.1f}/s",
        )
    pods = Table(expand=True, box=None, pad_edge=False)
    pods.add_column("sender pod", no_wrap=True)
    pods.add_column("ready")
    pods.add_column("works on now", ratio=1)
    for p in model.pods:
        pods.add_row(
            p.name,
            Text("yes", style="green") if p.ready else Text("no", style="yellow"),
            ", ".join(p.campaigns) or Text("-", style="dim"),
        )
    rate = Table.grid(padding=(0, 1), expand=True)
    rate.add_column(no_wrap=True)
    rate.add_column(ratio=1)
    rate.add_column(no_wrap=True)
    rate.add_row(
        Text("pool rate", style="bold"),
        _bar(model.pool_rate, model.throttle or max(model.pool_rate, 1)),
        f"{model.pool_rate:5.1f}/s of {model.throttle:g}/s throttle"
        if model.throttle
        else f"{model.pool_rate:.1f}/s",
    )
    split = f"split now {model.split or '-'}"
    if model.seed_split_seen:
        split += f"  (seed's split seen: {model.seed_split_seen})"
    relay = f"relay holds {model.delivered} messages" if model.delivered >= 0 else ""
    footer = Text("\n".join(line for line in (split, f"{relay}   {note}".strip()) if line), style="dim")
    return Panel(
        Group(campaigns, Text(""), pods, Text(""), rate, footer),
        title=f"make demo ({mode}): {model.at:5.1f} s since apply",
        border_style="cyan",
    )


@dataclass(frozen=True)
class Links:
    inbox: str  # Mailpit's REST API
    prometheus: str
    kubeconfig: str


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def summary(result: Summary, links: Links | None, other: Summary | None = None) -> RenderableType:
    table = Table(expand=True, box=None, pad_edge=False)
    for column in ("campaign", "phase", "total", "sent", "failed", "invalid", "first sent", "done at"):
        table.add_column(column, justify=_justify(column))
    for c in result.campaigns:
        table.add_row(
            c.name,
            Text(c.phase, style=PHASE_STYLE.get(c.phase, "")),
            str(c.total),
            str(c.sent),
            str(c.failed),
            str(c.invalid),
            _seconds(c.first_sent),
            _seconds(c.last_sent),
        )
    lines: list[RenderableType] = [table, Text("")]
    ok = result.all_completed and result.counts_match
    lines.append(Text(("✔ " if ok else "✘ ") + _completed_line(result), style="green" if ok else "red"))
    if result.mode == "parallel":
        split = ", ".join(f"{w}: {', '.join(cs)}" for w, cs in result.seed_split.items())
        seen = f"✔ the seed's split seen: {split}" if split else "✘ the seed's split was never seen"
        lines.append(Text(seen, style="green" if split else "red"))
    if result.all_at_once:
        lines.append(
            Text(
                f"✔ all {len(result.campaigns)} sent at the same time, for {result.overlap:.1f} s",
                style="green",
            )
        )
    else:
        style = "red" if result.mode == "parallel" else "yellow"
        lines.append(
            Text(
                f"{'✘' if style == 'red' else '·'} the campaigns did not all send at the same time",
                style=style,
            )
        )
    lines.append(
        Text(
            f"first message {_seconds(result.first_delivery)} after apply; from it, every campaign had "
            f"started within {_seconds(result.last_start)}, all were done in {_seconds(result.total_time)}; "
            f"at most {result.most_per_worker} campaign(s) on one process at a time"
        )
    )
    if other is not None:
        lines.append(Text(_compare(result, other), style="bold"))
    if links is not None:
        lines += [
            Text(""),
            Text("where to look next:", style="bold"),
            Text(f"  export KUBECONFIG={links.kubeconfig}; kubectl get mc,sp -n mail"),
            Text(f"  inbox (Mailpit REST API): {links.inbox}/api/v1/messages   or: make demo-mail"),
            Text(f"  Prometheus: {links.prometheus}/alerts"),
            Text("  make demo-down   stops everything"),
        ]
    return Panel(
        Group(*lines), title=f"make demo ({result.mode}): summary", border_style="green" if ok else "red"
    )


def _completed_line(result: Summary) -> str:
    if not result.campaigns:
        return "no campaigns"
    total = sum(c.total for c in result.campaigns)
    sent = sum(c.sent for c in result.campaigns)
    state = "every campaign Completed" if result.all_completed else "not every campaign Completed"
    return f"{state}: {sent} of {total} recipients sent, {sum(c.failed for c in result.campaigns)} failed"


def _compare(this: Summary, other: Summary) -> str:
    def describe(s: Summary) -> str:
        done, started = _seconds(s.total_time), _seconds(s.last_start)
        return f"{s.mode}: all done {done} after the first message, the last campaign started after {started}"

    return f"compared: {describe(this)}  vs  {describe(other)}"
