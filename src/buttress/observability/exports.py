"""The service's alert rules as a Prometheus rule file, and a Grafana dashboard of its
metrics, for users who already run Prometheus and Grafana (docs/observability.md).

The rule file is YAML written by hand: every scalar is a JSON string, which YAML reads as
it is, so no YAML library is needed (and none is a dependency).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from buttress.observability.alert_rules import AlertRule, _range, promql

GROUP = "buttress"


def _q(value: str) -> str:
    return json.dumps(value)


def recording_name(rule: AlertRule) -> str:
    return f"buttress:alert_{rule.name}:value"


def exportable(rules: Sequence[AlertRule]) -> tuple[list[AlertRule], list[AlertRule]]:
    """The rules Prometheus can evaluate (metric rules; query rules with ``promql``), and the
    others (query rules over events only buttress reads)."""
    ok = [r for r in rules if r.metric is not None or r.promql is not None]
    return ok, [r for r in rules if r not in ok]


def prometheus_rules(rules: Sequence[AlertRule], source: str = "buttress.toml") -> str:
    """A Prometheus rule file with one alert per exportable rule (a query rule's ``promql``
    also becomes a recording rule); the others are listed in a comment."""
    ok, skipped = exportable(rules)
    lines = [f"# Written by `buttress alerts export-prometheus` from {source}.",
             "# Check it with: promtool check rules FILE"]
    if skipped:
        lines.append("# Not exportable (their number comes from an insight query over the "
                     "events, and no metric has it):")
        lines += [f"#   {r.name}: {r.describe()}" for r in skipped]
    lines += ["groups:", f"  - name: {_q(GROUP)}", "    rules:"]
    if not ok:
        lines[-1] = "    rules: []"
    for rule in ok:
        if rule.metric is not None:
            value = promql(rule)
        else:
            assert rule.promql is not None
            lines += [f"      - record: {_q(recording_name(rule))}",
                      f"        expr: {_q(' '.join(rule.promql.split()))}"]
            value = recording_name(rule)
        expr = f"({value}) {rule.op} {rule.threshold!r}"
        lines += [f"      - alert: {_q(rule.name)}", f"        expr: {_q(expr)}"]
        if rule.for_:
            lines.append(f"        for: {_range(rule.for_)}")
        lines.append("        labels:")
        labels = {"severity": rule.severity, **rule.labels}
        lines += [f"          {_q(k)}: {_q(v)}" for k, v in labels.items()]
        summary = f"{rule.name}: {rule.summary or rule.describe()}"
        description = f"value {{{{ $value }}}} {rule.op} {rule.threshold:g}"
        lines += ["        annotations:", f"          summary: {_q(summary)}",
                  f"          description: {_q(description)}"]
    return "\n".join(lines) + "\n"


# -- Grafana ---------------------------------------------------------------------------------

RATE = "[$__rate_interval]"
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Requests per second by status", "reqps", [
        (f"sum by (status) (rate(buttress_requests_total{RATE}))", "{{status}}")]),
    ("Request latency", "s", [
        (f"histogram_quantile(0.5, sum by (le) (rate(buttress_request_duration_seconds_bucket"
         f"{RATE})))", "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate(buttress_request_duration_seconds_bucket"
         f"{RATE})))", "p99")]),
    ("Fallbacks per second by category", "ops", [
        (f"sum by (category) (rate(buttress_fallbacks_total{RATE}))", "{{category}}")]),
    ("Fallbacks per request", "percentunit", [
        (f"sum(rate(buttress_fallbacks_total{RATE})) / sum(rate(buttress_requests_total{RATE}))",
         "fallbacks / requests")]),
    ("Input contract violations by field", "ops", [
        (f"sum by (field, kind) (rate(buttress_input_contract_violations_total{RATE}))",
         "{{field}} {{kind}}")]),
    ("Model latency p99 by version", "s", [
        (f"histogram_quantile(0.99, sum by (le, model, version) "
         f"(rate(buttress_model_latency_seconds_bucket{RATE})))", "{{model}} {{version}}")]),
    ("Batch size (rows) and queue", "short", [
        (f"histogram_quantile(0.5, sum by (le, model) (rate(buttress_batch_size_rows_bucket"
         f"{RATE})))", "p50 rows {{model}}"),
        ("sum by (model) (buttress_batch_queue_rows)", "queued {{model}}")]),
    ("Batch queue wait p99", "s", [
        (f"histogram_quantile(0.99, sum by (le, model) "
         f"(rate(buttress_batch_queue_wait_seconds_bucket{RATE})))", "{{model}}")]),
    ("Cache hit ratio", "percentunit", [
        (f'sum by (cache) (rate(buttress_cache_lookups_total{{result="hit"}}{RATE})) / '
         f"sum by (cache) (rate(buttress_cache_lookups_total{RATE}))", "{{cache}}")]),
    ("Guardrails", "short", [
        (f"sum by (guardrail) (rate(buttress_guardrail_trips_total{RATE}))",
         "trips/s {{guardrail}}"),
        ("max by (guardrail) (buttress_guardrail_budget_used)", "used {{guardrail}}")]),
    ("Circuit breakers open", "short", [
        ("max by (stage) (buttress_breaker_open)", "{{stage}}")]),
    ("In flight and event-loop lag", "short", [
        ("sum(buttress_in_flight_requests)", "in flight"),
        ("max(buttress_event_loop_lag_seconds)", "loop lag (s)")]),
    ("Events dropped per second", "ops", [
        (f"sum(rate(buttress_events_dropped_total{RATE}))", "dropped")]),
    ("Alerts firing", "short", [
        ("max by (alert) (buttress_alerts_firing)", "{{alert}}")]),
    ("Process CPU and memory", "short", [
        (f"rate(process_cpu_seconds_total{RATE})", "CPU seconds/s {{instance}}"),
        ("process_resident_memory_bytes", "RSS bytes {{instance}}")]),
]


def grafana_dashboard(title: str = "buttress") -> dict[str, Any]:
    """A Grafana dashboard (JSON model) with a Prometheus data source chosen on import."""
    panels = []
    for index, (name, unit, queries) in enumerate(PANELS):
        panels.append({
            "id": index + 1, "type": "timeseries", "title": name,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                        for i, (expr, legend) in enumerate(queries)],
        })
    return {
        "title": title, "uid": "buttress", "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "tags": ["buttress"],
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Prometheus"}]},
        "panels": panels,
    }


def metric_names(dashboard: dict[str, Any]) -> set[str]:
    """The metric names the dashboard's queries read."""
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names.update(re.findall(r"\b((?:buttress|process)_[a-z_]+)\b", target["expr"]))
    return names
