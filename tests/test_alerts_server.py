"""An alert on a business metric, end to end: a real server hands out large discounts, the
rule fires within its ``for`` period, a real HTTP server receives the webhook, and the rule
resolves once discounts are back to normal."""

from __future__ import annotations

import http.server
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.servers import metric_value, running_server
from tests.support import free_port
from tests.test_events_server import LOGGED_DEMO, demo_order

pytestmark = pytest.mark.slow

FOR_SECONDS = 2.0
WINDOW_SECONDS = 3.0


class Hooks:
    """A webhook receiver: a real HTTP server on loopback that keeps every JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hooks.bodies.append(orjson.loads(self.rfile.read(length)))
                hooks.received_at.append(time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def states(self) -> list[str]:
        return [body["buttress"]["state"] for body in self.bodies]


@contextmanager
def webhook_receiver() -> Iterator[Hooks]:
    hooks = Hooks()
    thread = threading.Thread(target=hooks.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hooks
    finally:
        hooks.server.shutdown()
        hooks.server.server_close()


def write_config(workdir: Path, webhook: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "buttress.toml").write_text(f"""
alerts_interval = "0.25s"

[[alerts]]
name = "large_discounts"
query = '''SELECT avg(prediction.mean_discount_pct) FROM events
           WHERE kind = 'request' AND status = 200'''
window = "{WINDOW_SECONDS}s"
op = ">"
threshold = 14.0
for = "{FOR_SECONDS}s"
severity = "page"
labels = {{ team = "pricing" }}
summary = "mean discount over the last {WINDOW_SECONDS:g}s"
actions = ["log", "webhook"]
webhook = "{webhook}"
""")


def test_a_business_alert_fires_posts_its_webhook_and_resolves(tmp_path: Path) -> None:
    users = itertools.count(1)  # a new user each order: the per-user guardrail stays out

    def send(http: httpx.Client, margin: float, seconds: float,
             until: Any = None) -> float:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until()):
            order = demo_order(f"o-{next(users)}")
            order["user"]["id"] = next(users)
            order["sub_orders"][0]["margin"] = margin
            assert http.post("/predict", json=order).status_code == 200
            time.sleep(0.005)
        return time.monotonic()

    with webhook_receiver() as hooks:
        write_config(tmp_path, hooks.url)
        with running_server(LOGGED_DEMO, tmp_path) as server, \
                httpx.Client(base_url=server.base_url, timeout=10) as http:
            send(http, margin=0.18, seconds=2.0)  # ~6 %: nothing to see
            assert hooks.bodies == []
            large_from = time.monotonic()
            send(http, margin=0.6, seconds=20.0, until=lambda: hooks.bodies)  # ~17 %
            assert hooks.states() == ["firing"], server.output()
            fired_after = hooks.received_at[0] - large_from
            assert FOR_SECONDS <= fired_after <= FOR_SECONDS + WINDOW_SECONDS + 3.0
            firing_metric = metric_value(server.metrics(), "buttress_alerts_firing",
                                         alert="large_discounts")
            normal_from = time.monotonic()
            send(http, margin=0.18, seconds=20.0, until=lambda: len(hooks.bodies) > 1)
            assert hooks.states() == ["firing", "resolved"]
            assert hooks.received_at[1] - normal_from <= WINDOW_SECONDS + 3.0
            resolved_metric = metric_value(server.metrics(), "buttress_alerts_firing",
                                           alert="large_discounts")
            assert server.stop() == 0, server.output()
    assert (firing_metric, resolved_metric) == (1.0, 0.0)
    firing = hooks.bodies[0]
    assert firing["text"].startswith("[FIRING] large_discounts (page) on discount:")
    assert "team=pricing" in firing["text"]
    assert firing["buttress"]["value"] > 14.0
    alerts = server.events(kind="alert")
    assert [(e["alert"], e["state"]) for e in alerts] == [
        ("large_discounts", "firing"), ("large_discounts", "resolved")]
    assert "[FIRING] large_discounts" in server.output()  # the log action


def test_with_two_workers_one_process_evaluates(tmp_path: Path) -> None:
    with webhook_receiver() as hooks:
        tmp_path.mkdir(parents=True, exist_ok=True)
        (tmp_path / "buttress.toml").write_text(f"""
alerts_interval = "0.2s"

[[alerts]]
name = "served"
metric = "buttress_requests_total"
threshold = 3
actions = ["webhook"]
webhook = "{hooks.url}"
""")
        with running_server(LOGGED_DEMO, tmp_path, args=["--workers", "2"]) as server, \
                httpx.Client(base_url=server.base_url, timeout=10) as http:
            for i in range(10):
                assert http.post("/predict", json=demo_order(f"o-{i}")).status_code == 200
            deadline = time.monotonic() + 15
            while not hooks.bodies and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # time for a second evaluator, if there were one, to fire too
            assert server.stop() == 0, server.output()
    assert hooks.states() == ["firing"], "one evaluator for the two workers"
    alerts = server.events(kind="alert")
    assert [(e["alert"], e["state"]) for e in alerts] == [("served", "firing")]
    # the state file: the evaluator's (or, once it exited at shutdown, the worker that took
    # the lock over and carried its state on without notifying again)
    state = orjson.loads((server.events_dir / "alerts-state-discount.json").read_bytes())
    assert state["alerts"]["served"]["state"] == "firing"
