"""`make demo`: set-up with progress, the local cluster, the chart, Mailpit and Prometheus, the seed's
campaigns under a live view, then the summary (saved for the next run to compare with, and as an SVG
when asked). Everything it starts stays up until `make demo-down` (__main__.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live

from tests.harness import cluster as local_cluster
from tests.harness.demo import mailpit, monitoring, scenario, tools, view
from tests.harness.demo.model import CampaignResult, Summary, Timeline, view_model
from tests.harness.demo.observe import Observer, bundled_redis_url, quietly
from tests.harness.demo.runner import Run
from tests.harness.demo.state import DemoState
from tests.harness.kubeapi import KubeApi

TIMEOUT = 300.0  # seconds for the campaigns, after they are applied
FULLNAME = scenario.RELEASE  # the chart's <fullname> for this release name


def _step(console: Console, what: str, started: float) -> None:
    console.print(f"[green]✔[/] {what} [dim]({time.monotonic() - started:.1f} s)[/]")


def _cluster(console: Console) -> tuple[KubeApi, scenario.Cluster]:
    starting = "starting the local cluster (etcd, kube-apiserver, controllers, node agent) ..."
    with console.status(starting), contextlib.redirect_stdout(io.StringIO()) as out:
        local_cluster.up()
    state = json.loads(local_cluster.STATE_FILE.read_text())
    console.print(f"[green]✔[/] cluster: {out.getvalue().splitlines()[0]}")
    pki = local_cluster.STATE_DIR / "pki"
    api = KubeApi(state["server"], pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
    return api, scenario.Cluster(Path(state["kubeconfig"]), DemoState.DIR / "helm")


def _installed(kube: scenario.Cluster) -> bool:
    try:
        kube.helm("status", scenario.RELEASE, "-n", scenario.RELEASE_NAMESPACE)
    except RuntimeError:
        return False
    return True


def demo(mode: str, svg: Path | None) -> int:
    started = time.monotonic()
    console = Console()
    plan = scenario.load(mode)
    console.rule(f"make demo (MODE={mode})")
    _, mailpit_binary = tools.ensure(console)
    _step(console, "binaries ready (control plane, helm, mailpit)", started)
    api, kube = _cluster(console)
    state = DemoState.load()
    if not state.alive("mailpit"):
        relay = mailpit.Mailpit(mailpit_binary, DemoState.DIR / "mailpit")
        state.remember("mailpit", relay.start(), relay.url)
        _step(console, f"mailpit: SMTP on 127.0.0.1:{relay.smtp_port}, REST API on {relay.url}", started)
    else:
        mailpit.clear(state.urls["mailpit"])
    if not _installed(kube):
        with console.status("helm install (the operator, the bundled Redis without persistence) ..."):
            scenario.install_chart(kube, scenario.NAMESPACE)
        _step(console, f"helm install {scenario.RELEASE} -n {scenario.RELEASE_NAMESPACE}", started)
    if not state.alive("prometheus"):
        with console.status("prometheus: scraping the pods, loading the chart's alerts ..."):
            pid, url = monitoring.start(kube, DemoState.DIR / "monitoring")
        state.remember("prometheus", pid, url)
        _step(console, f"prometheus at {url}", started)
    relay_url = state.urls["mailpit"]
    run = Run(
        api,
        kube,
        scenario.NAMESPACE,
        plan,
        mode,
        Observer(
            api,
            scenario.NAMESPACE,
            scenario.POOL,
            lambda: bundled_redis_url(api, scenario.RELEASE_NAMESPACE, FULLNAME),
            quietly(lambda: mailpit.message_count(relay_url)),
        ),
    )
    run.wait_for_kinds()
    run.reset()
    run.apply()
    _step(console, "applied examples/seed/ (the pool, 5 recipient lists, 5 campaigns)", started)
    since_start = run.applied_at - started
    frame: list[Any] = [view.live(None, mode)]

    def draw(timeline: Timeline, _: object) -> None:
        frame[0] = view.live(view_model(timeline), mode)
        live.update(frame[0])

    with Live(frame[0], console=console, refresh_per_second=4) as live:
        summary = run.watch(TIMEOUT, draw)
    other = _load(mode)
    _save(summary)
    links = view.Links(relay_url, state.urls["prometheus"], str(kube.kubeconfig))
    final = view.summary(summary, links, other)
    console.print(final)
    if summary.first_delivery is not None:
        console.print(
            f"first message delivered {since_start + summary.first_delivery:.1f} s after `make demo` started"
        )
    if svg is not None:
        _export(svg, Group(frame[0], final))
        console.print(f"saved the final screen as {svg}")
    return 0 if not summary.problems() else 1


def _export(path: Path, screen: Any) -> None:
    recorder = Console(record=True, width=120, file=io.StringIO(), force_terminal=True)
    recorder.print(screen)
    recorder.save_svg(str(path), title="make demo")


def _result_file(mode: str) -> Path:
    return DemoState.DIR / f"result-{mode}.json"


def _save(summary: Summary) -> None:
    _result_file(summary.mode).write_text(json.dumps(dataclasses.asdict(summary)))


def _load(mode: str) -> Summary | None:
    """The other mode's last result, to compare with."""
    other = {"parallel": "serial", "serial": "parallel"}[mode]
    path = _result_file(other)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["campaigns"] = tuple(CampaignResult(**c) for c in raw["campaigns"])
    raw["seed_split"] = {w: tuple(cs) for w, cs in raw["seed_split"].items()}
    return Summary(**raw)
