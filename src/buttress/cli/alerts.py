"""``buttress alerts list|check|export-prometheus`` and ``buttress dashboards export-grafana``.

``list`` shows the rules of ``buttress.toml`` with the state a running server last wrote
(``<events_dir>/alerts-state-<service>.json``); ``check`` evaluates every rule once, now: the
query rules over the event files, the metric rules over two scrapes of ``--url`` (``--sample``
apart, for rates); exit status 1 when a rule's condition holds, 0 when none does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from buttress.config import ConfigError, Settings, load_settings
from buttress.observability.alert_rules import AlertRule
from buttress.observability.alert_values import MetricHistory, query_values
from buttress.observability.alerts import read_alert_state
from buttress.observability.exports import exportable, grafana_dashboard, prometheus_rules
from buttress.resilience.durations import seconds

app = typer.Typer(help="Alert rules: list, check, export to Prometheus.")
dashboards = typer.Typer(help="Dashboards of buttress metrics for Grafana.")

ConfigOption = Annotated[str | None, typer.Option("--config", help="Path to buttress.toml.")]
EventsOption = Annotated[str | None, typer.Option(
    "--events", help="Event directory (default: events_dir).")]
OutputOption = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Write to this file (default: stdout).")]


def _settings(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as error:
        typer.echo(f"buttress: error: {error}", err=True)
        raise typer.Exit(code=2) from None


def _watches(rule: AlertRule) -> str:
    condition = f"{rule.op} {rule.threshold:g}"
    if rule.for_:
        condition += f" for {rule.for_:g}s"
    return condition


def _states(events_dir: str) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(events_dir).glob("alerts-state-*.json")):
        state = read_alert_state(path)
        if state is not None:
            states.update(state["alerts"])
    return states


def _number(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"


@app.command("list")
def list_rules(config: ConfigOption = None, events: EventsOption = None) -> None:
    """The rules, with the state and last value a running server recorded."""
    settings = _settings(config)
    states = _states(events or settings.events_dir)
    table = Table("alert", "watches", "condition", "severity", "state", "last value",
                  "evaluated", caption=f"{len(settings.alerts)} rules")
    for rule in settings.alerts:
        state = states.get(rule.name, {})
        evaluated = state.get("evaluated_at")
        ago = "never" if evaluated is None else f"{max(0.0, time.time() - evaluated):.0f}s ago"
        table.add_row(rule.name, rule.describe(), _watches(rule), rule.severity,
                      state.get("state", "unknown"), _number(state.get("value")), ago)
    Console().print(table)


@app.command("check")
def check(
    url: Annotated[str | None, typer.Option(
        "--url", help="A running server, for metric rules: http://127.0.0.1:8000")] = None,
    sample: Annotated[str, typer.Option(
        "--sample", help="Time between the two scrapes that rates are taken over.")] = "5s",
    config: ConfigOption = None,
    events: EventsOption = None,
) -> None:
    """Evaluate every rule once, now; exit 1 if any rule's condition holds."""
    settings = _settings(config)
    rules = settings.alerts
    now = time.time()
    values = query_values([r for r in rules if not r.is_metric_rule],
                          events or settings.events_dir, settings.insights.queries, now)
    metric_rules = [r for r in rules if r.is_metric_rule]
    if metric_rules:
        if url is None:
            values.update({r.name: (None, "needs --url") for r in metric_rules})
        else:
            values.update(_scraped_values(metric_rules, url, seconds(sample, name="--sample")))
    table = Table("alert", "value", "condition", "holds", "note")
    holding = 0
    for rule in rules:
        value, note = values[rule.name]
        holds = rule.holds(value)
        holding += holds
        table.add_row(rule.name, _number(value), _watches(rule), "yes" if holds else "no",
                      note or "")
    Console().print(table)
    raise typer.Exit(code=1 if holding else 0)


def _scraped_values(rules: list[AlertRule], url: str,
                    pause: float) -> dict[str, tuple[float | None, str | None]]:
    from prometheus_client.parser import text_string_to_metric_families

    history = MetricHistory(rules)
    needs_rate = any(r.function != "value" for r in rules)
    try:
        for scrape in range(2 if needs_rate else 1):
            if scrape:
                time.sleep(pause)
            text = httpx.get(f"{url.rstrip('/')}/metrics", timeout=10).text
            history.record(time.time(), text_string_to_metric_families(text))
    except httpx.HTTPError as error:
        return {r.name: (None, f"cannot scrape {url}: {error}") for r in rules}
    now = time.time()
    return {r.name: (history.value(r, now), None) for r in rules}


@app.command("export-prometheus")
def export_prometheus(config: ConfigOption = None, output: OutputOption = None) -> None:
    """Write the rules as a Prometheus rule file (query rules without promql are listed as
    not exportable)."""
    settings = _settings(config)
    text = prometheus_rules(settings.alerts, source=config or "buttress.toml")
    _, skipped = exportable(settings.alerts)
    for rule in skipped:
        typer.echo(f"buttress: not exportable (an insight query): {rule.name}", err=True)
    _write(text, output)


@dashboards.command("export-grafana")
def export_grafana(
    title: Annotated[str, typer.Option("--title", help="The dashboard's title.")] = "buttress",
    output: OutputOption = None,
) -> None:
    """Write a Grafana dashboard (JSON) of the metrics buttress exports."""
    _write(json.dumps(grafana_dashboard(title), indent=2) + "\n", output)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
