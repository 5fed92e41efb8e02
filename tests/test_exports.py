"""Alert rules exported for Prometheus (checked and unit-tested by promtool, then loaded by a
real Prometheus scraping a real server) and the Grafana dashboard's metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from buttress.cli import app
from buttress.config import load_settings
from buttress.observability.exports import grafana_dashboard, metric_names, prometheus_rules
from tests.servers import DEMO, running_server
from tests.support import free_port, wait_for_port
from tests.test_events_server import demo_order

RULES = """
[[alerts]]
name = "model_errors"
metric = "buttress_fallbacks_total"
function = "ratio"
match = { category = "model_error" }
over = "buttress_requests_total"
window = "5m"
threshold = 0.1
for = "2m"
severity = "page"
labels = { team = "ml" }
summary = "model errors per request"

[[alerts]]
name = "slow_p99"
metric = "buttress_request_duration_seconds"
function = "quantile"
quantile = 0.99
window = "5m"
threshold = 0.2

[[alerts]]
name = "busy"
metric = "buttress_in_flight_requests"
threshold = 100

[[alerts]]
name = "fallbacks_per_second"
query = "SELECT count(*) / 300.0 FROM events, unnest(fallbacks)"
promql = "sum(rate(buttress_fallbacks_total[5m]))"
window = "5m"
threshold = 5

[[alerts]]
name = "large_discounts"
query = "SELECT avg(prediction.mean_discount_pct) FROM events WHERE kind = 'request'"
threshold = 14
"""


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def exported(tmp_path: Path, rules: str = RULES) -> Path:
    config = tmp_path / "buttress.toml"
    config.write_text(rules)
    result = CliRunner().invoke(app, ["alerts", "export-prometheus", "--config", str(config),
                                      "-o", str(tmp_path / "rules.yml")])
    assert result.exit_code == 0, result.output
    assert "not exportable (an insight query): large_discounts" in result.output
    return tmp_path / "rules.yml"


def test_query_rules_without_promql_are_listed_as_not_exportable(tmp_path: Path) -> None:
    text = exported(tmp_path).read_text()
    assert "#   large_discounts: SELECT avg(prediction.mean_discount_pct)" in text
    assert 'alert: "large_discounts"' not in text
    assert 'record: "buttress:alert_fallbacks_per_second:value"' in text
    config = tmp_path / "buttress.toml"
    assert prometheus_rules(load_settings(config).alerts).count("- alert:") == 4


@pytest.mark.slow
def test_promtool_checks_and_unit_tests_the_exported_rules(tmp_path: Path) -> None:
    rules = exported(tmp_path)
    check = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True,
                           timeout=30, check=False)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    (tmp_path / "rules_test.yml").write_text(textwrap.dedent("""
        rule_files: [rules.yml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'buttress_requests_total{service="discount",status="200"}'
                values: '0+100x15'
              - series: 'buttress_fallbacks_total{stage="discount_model",category="model_error"}'
                values: '0+50x15'
              - series: 'buttress_in_flight_requests{service="discount"}'
                values: '3x15'
            alert_rule_test:
              - eval_time: 2m
                alertname: model_errors
                exp_alerts: []
              - eval_time: 10m
                alertname: model_errors
                exp_alerts:
                  - exp_labels: {severity: page, team: ml}
                    exp_annotations:
                      summary: "model_errors: model errors per request"
                      description: "value 0.5 > 0.1"
              - eval_time: 10m
                alertname: busy
                exp_alerts: []
            promql_expr_test:
              - expr: buttress:alert_fallbacks_per_second:value
                eval_time: 10m
                exp_samples:
                  - labels: 'buttress:alert_fallbacks_per_second:value'
                    value: 0.8333333333333334
    """))
    test = subprocess.run([promtool(), "test", "rules", "rules_test.yml"], cwd=tmp_path,
                          capture_output=True, timeout=30, check=False)
    assert test.returncode == 0, test.stdout.decode() + test.stderr.decode()


@pytest.mark.slow
def test_every_dashboard_metric_is_in_a_real_servers_metrics(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dashboards", "export-grafana"])
    dashboard = json.loads(result.output)
    assert dashboard == grafana_dashboard()
    names = metric_names(dashboard)
    assert len(names) >= 15
    with running_server(DEMO, tmp_path) as server, httpx.Client(
            base_url=server.base_url, timeout=10) as http:
        for i in range(5):
            http.post("/predict", json=demo_order(f"o-{i}"))
        http.post("/predict", json=demo_order("fail-model-1"))
        text = server.metrics()
    exported_names = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                      if line and not line.startswith("#")}
    exported_names |= {line.split()[2] for line in text.splitlines()
                       if line.startswith("# TYPE")}
    assert names - exported_names == set()


PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
scrape_configs:
  - job_name: buttress
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""

E2E_RULES = """
[[alerts]]
name = "model_errors"
metric = "buttress_fallbacks_total"
function = "ratio"
match = { stage = "discount_model" }
over = "buttress_requests_total"
window = "15s"
threshold = 0.3
for = "2s"
severity = "page"
"""
NOT_EXPORTABLE = """
[[alerts]]
name = "large_discounts"
query = "SELECT avg(prediction.mean_discount_pct) FROM events WHERE kind = 'request'"
threshold = 14
"""


@pytest.mark.slow
def test_a_real_prometheus_fires_the_exported_alert(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    exported(tmp_path, E2E_RULES + NOT_EXPORTABLE)
    with running_server(DEMO, tmp_path / "server") as server, httpx.Client(
            base_url=server.base_url, timeout=10) as http:
        (tmp_path / "prometheus.yml").write_text(PROMETHEUS_CONFIG.format(port=server.port))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [prometheus, "--config.file=prometheus.yml", f"--storage.tsdb.path={tmp_path}/tsdb",
             f"--web.listen-address=127.0.0.1:{port}"],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, timeout=30)
            api = f"http://127.0.0.1:{port}/api/v1"
            deadline = time.monotonic() + 60
            states: list[str] = []
            i = 0
            while time.monotonic() < deadline:
                for _ in range(5):
                    i += 1
                    http.post("/predict", json=demo_order(f"fail-model-{i}"))
                alerts = httpx.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
                states = [a["state"] for a in alerts if a["labels"]["alertname"] == "model_errors"]
                if states == ["firing"]:
                    break
                time.sleep(0.5)
            up = httpx.get(f"{api}/query", params={"query": "up"}, timeout=5).text
            assert states == ["firing"], up + (tmp_path / "prometheus.log").read_text()[-2000:]
            loaded = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
            assert {r["name"] for g in loaded for r in g["rules"]} >= {"model_errors"}
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()

