"""The terminal face of a traffic run: a rich live view, a log line, a summary, and the sync entry.

On a terminal the view redraws four times a second: totals by status, fallbacks by category
with their rate, latency, the request mix, and a sparkline of answers per second. Elsewhere
(a pipe, CI, ``display=False``) a one-line summary is printed every five seconds instead. Either
way a summary table is printed at the end, after ``duration`` or on Ctrl-C.

The sparkline is eight block characters picked by value: rich has none and this is not worth a
dependency (textual's ``Sparkline`` is a widget for a full-screen app).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from buttress.demo.traffic.driver import drive
from buttress.demo.traffic.mix import Episodes, Mix
from buttress.demo.traffic.stats import Latency, TrafficReport

SPARK = "▁▂▃▄▅▆▇█"


def run_traffic(
    base_url: str, *, duration: float | None = None, rate: float = 100.0, concurrency: int = 64,
    seed: int = 0, display: bool = True, mix: Mix | None = None, episodes: Episodes | None = None,
    orders: Sequence[Mapping[str, Any]] | None = None, console: Console | None = None,
    ready_timeout: float = 30.0,
) -> TrafficReport:
    """Drive ``base_url`` (waiting for ``/readyz`` first) and show it; blocks until done.

    Runs its own event loop, so call it where none is running (the CLI's main thread). Ctrl-C
    stops the traffic, waits briefly for requests in flight and still prints the summary.
    Raises :class:`~buttress.demo.traffic.driver.TrafficError` if the service never becomes ready.
    """
    console = console or Console()
    live = display and console.is_terminal
    reporter: LiveView | LogLines = LiveView(console) if live else LogLines(console)

    async def main() -> TrafficReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with _on_interrupt(loop, stop.set), reporter.shown():
            return await drive(base_url, duration=duration, rate=rate, concurrency=concurrency,
                               seed=seed, mix=mix, episodes=episodes, orders=orders, stop=stop,
                               reporter=reporter, ready_timeout=ready_timeout)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        report = runner.run(main())
    console.print(summary(report))
    return report


@contextlib.contextmanager
def _on_interrupt(loop: asyncio.AbstractEventLoop, callback: Any) -> Iterator[None]:
    """Ctrl-C sets the stop event (a graceful end) instead of cancelling the run mid-request."""
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or Windows
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # uvloop comes with uvicorn[standard]; the stdlib loop is fine too
        return None
    return uvloop.new_event_loop


class LiveView:
    """A rich ``Live`` view, redrawn from the driver's loop (no refresh thread reading stats).

    Transient: when the run ends the summary takes its place rather than repeating it.
    """

    interval = 0.25

    def __init__(self, console: Console) -> None:
        self._live = Live(console=console, auto_refresh=False, transient=True)

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        with self._live:
            yield

    def update(self, report: TrafficReport) -> None:
        self._live.update(render(report), refresh=True)


class LogLines:
    """One summary line every five seconds, for pipes and CI logs."""

    interval = 5.0

    def __init__(self, console: Console) -> None:
        self._console = console

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        yield

    def update(self, report: TrafficReport) -> None:
        self._console.print(line(report), highlight=False, soft_wrap=True)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _latency_text(label: str, latency: Latency) -> str:
    return f"{label} p50 {_ms(latency.p50)}  p99 {_ms(latency.p99)}  max {_ms(latency.max)}"


def line(report: TrafficReport) -> str:
    statuses = " ".join(f"{code}:{n}" for code, n in sorted(report.statuses.items()))
    fallbacks = " ".join(f"{c}:{n}" for c, n in sorted(report.fallbacks.items())) or "none"
    return (f"traffic {report.elapsed:6.1f}s  sent {report.total_sent} "
            f"({report.achieved_rate:.1f}/s)  status {statuses or '-'}  "
            f"errors {report.connection_errors}  fallbacks {fallbacks}  "
            f"{_latency_text('latency', report.latency)}")


def sparkline(values: Sequence[int]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[round(v / top * (len(SPARK) - 1))] for v in values)


def _status_style(code: int) -> str:
    return "green" if code < 300 else "yellow" if code < 500 else "red"


def _status_table(report: TrafficReport) -> Table:
    table = Table(title="status", title_justify="left", expand=False)
    table.add_column("status", no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    total = max(1, report.completed)
    for code, count in sorted(report.statuses.items()):
        table.add_row(Text(str(code), style=_status_style(code)), str(count),
                      f"{100 * count / total:.1f}%")
    for name, count in sorted(report.errors.items()):
        table.add_row(Text(name, style="bold red"), str(count), f"{100 * count / total:.1f}%")
    if report.skipped:
        table.add_row(Text("skipped (client busy)", style="dim"), str(report.skipped), "")
    return table


def _fallback_table(report: TrafficReport) -> Table:
    table = Table(title="fallbacks", title_justify="left")
    table.add_column("category", no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("rate/s", justify="right")
    for category, count in sorted(report.fallbacks.items(), key=lambda kv: -kv[1]):
        table.add_row(category, str(count), f"{report.fallback_rates.get(category, 0.0):.1f}")
    if not report.fallbacks:
        table.add_row(Text("none", style="dim"), "", "")
    return table


def _mix_table(report: TrafficReport) -> Table:
    table = Table(title="sent", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("count", justify="right")
    for kind, count in sorted(report.sent.items(), key=lambda kv: -kv[1]):
        table.add_row(kind, str(count))
    extras = []
    if report.cache:
        extras.append("cache " + " ".join(f"{k}={v}" for k, v in sorted(report.cache.items())))
    if report.model_versions:
        extras.append("model " + " ".join(
            f"{k}={v}" for k, v in sorted(report.model_versions.items())))
    if extras:
        table.caption = "\n".join(extras)
    return table


def _header(report: TrafficReport) -> Text:
    header = Text.assemble(
        ("buttress traffic ", "bold"), (report.url, "cyan"),
        f"   {report.elapsed:.1f}s   target {report.target_rate:.0f} req/s"
        f"   answered {report.per_second[-1] if report.per_second else 0}/s"
        f"   in flight {report.in_flight}")
    if report.burst:
        header.append("   BURST", style="bold magenta")
    if report.outage:
        header.append("   MODEL OUTAGE", style="bold red")
    return header


def _tables(report: TrafficReport) -> Columns:
    """Side by side when the terminal is wide enough, one under another when not."""
    return Columns([_status_table(report), _fallback_table(report), _mix_table(report)],
                   padding=(0, 2))


def render(report: TrafficReport) -> RenderableType:
    """The live view of one report."""
    tables = _tables(report)
    spark = report.per_second
    return Group(
        _header(report),
        tables,
        Text(_latency_text("latency (last 10 s)", report.latency)),
        Text.assemble(f"answers/s (last {len(spark)} s) ", (sparkline(spark), "green"),
                      f" {spark[-1] if spark else 0}/s now, max {max(spark, default=0)}/s"),
    )


def summary(report: TrafficReport) -> RenderableType:
    """The end-of-run summary: totals, fallbacks, the mix and whole-run latency."""
    tables = _tables(report)
    return Group(
        Text.assemble(("traffic summary ", "bold"), (report.url, "cyan"),
                      f"   {report.elapsed:.1f}s   {report.total_sent} sent"
                      f"   {report.achieved_rate:.1f} req/s"
                      f"   connection errors {report.connection_errors}"),
        tables,
        Text(_latency_text("latency (whole run)", report.run_latency)),
    )

