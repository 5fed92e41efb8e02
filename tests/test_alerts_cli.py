"""``buttress alerts list`` and ``buttress alerts check``."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from buttress.cli import app
from buttress.observability.events import JsonlSink
from tests.support import free_port

CONFIG = """
events_dir = "{events}"

[[alerts]]
name = "large_discounts"
query = "SELECT avg(prediction.mean_discount_pct) FROM events"
window = "5m"
threshold = 14

[[alerts]]
name = "busy"
metric = "buttress_in_flight_requests"
threshold = 2
"""

METRICS = b"""# HELP buttress_in_flight_requests Requests being served now.
# TYPE buttress_in_flight_requests gauge
buttress_in_flight_requests{service="discount"} 3.0
"""


@pytest.fixture
def metrics_url() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def setup(tmp_path: Path, discount: float) -> Path:
    events = tmp_path / "events"
    sink = JsonlSink(events)
    sink.write([{"v": 1, "kind": "request", "ts": time.time(),
                 "prediction": {"mean_discount_pct": discount}}])
    sink.close()
    config = tmp_path / "buttress.toml"
    config.write_text(CONFIG.format(events=events))
    return config


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["alerts", *args], env={"COLUMNS": "240"})


def test_check_exits_1_when_a_rule_holds(tmp_path: Path, metrics_url: str) -> None:
    config = setup(tmp_path, discount=17.0)
    result = invoke("check", "--config", str(config), "--url", metrics_url)
    assert result.exit_code == 1, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines()
            if "│" in line}
    assert "17" in rows["large_discounts"]
    assert "yes" in rows["large_discounts"]
    assert "3" in rows["busy"]
    assert "yes" in rows["busy"]


def test_check_exits_0_when_none_holds_and_says_what_is_missing(tmp_path: Path) -> None:
    config = setup(tmp_path, discount=6.0)
    result = invoke("check", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "needs --url" in result.output


def test_list_shows_the_state_a_server_recorded(tmp_path: Path) -> None:
    config = setup(tmp_path, discount=6.0)
    state = {"service": "discount", "pid": 1, "written_at": time.time(), "alerts": {
        "large_discounts": {"state": "firing", "value": 15.5, "active_since": time.time(),
                            "evaluated_at": time.time(), "severity": "warning",
                            "error": None}}}
    (tmp_path / "events" / "alerts-state-discount.json").write_bytes(orjson.dumps(state))
    result = invoke("list", "--config", str(config))
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "large_discounts" in line)
    assert "firing" in line
    assert "15.5" in line
    busy = next(line for line in result.output.splitlines() if "busy" in line)
    assert "unknown" in busy
    assert "sum(buttress_in_flight_requests)" in busy
