"""The dashboard in a real browser: Debian's ``chromium``, driven by Playwright, on a real demo
server with ``--workers 2`` after the demo's own traffic driver ran.

- the page loads and polls with no console error and no page error;
- every panel shows data (``data-state="data"``), the contract-violation panel names
  ``seller_margin`` (the renamed key of the traffic's ``renamed_key`` requests);
- the rollback button without the admin token is refused by the server and nothing changes;
  with the token it rolls back, the page shows every replica switch, and later ``/predict``
  answers carry the previous ``X-Model-Version``; the token never appears in a URL;
- a screenshot is saved (to ``tmp_path``, and to ``$BUTTRESS_DASHBOARD_SCREENSHOT`` if set:
  that is how docs/images/dashboard.png is made).

Chromium comes from scripts/system-packages.sh (``apt-get install chromium``); Playwright never
downloads a browser here. Without /usr/bin/chromium the tests are skipped.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from buttress.demo.traffic.driver import drive
from buttress.demo.traffic.mix import Episodes, Kind
from tests.servers import DEMO, RunningServer, running_server
from tests.test_events_server import demo_order

CHROMIUM = Path("/usr/bin/chromium")
# --headless --no-sandbox: a root CI container; the rest keeps Chromium off the network (it
# would otherwise try Google's services on a closed network) and quiet
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT_ENV = "BUTTRESS_DASHBOARD_SCREENSHOT"
TOKEN = "dashboard-browser-token"
PANELS = ("requests", "latency", "fallbacks", "models", "violations", "batches", "guardrails",
          "caches", "alerts", "insights")
CONFIG = """
alerts_interval = "0.5s"

[[alerts]]
name = "renamed_keys"
metric = "buttress_input_contract_violations_total"
function = "rate"
match = { kind = "renamed" }
window = "30s"
threshold = 0.5
summary = "renamed keys per second: a producer changed its schema"
"""

pytestmark = [
    pytest.mark.browser, pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium "
                       "package; scripts/system-packages.sh installs it)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir: Path = tmp_path_factory.mktemp("dashboard-browser")
    (workdir / "buttress.toml").write_text(CONFIG)
    with running_server(DEMO, workdir, env={"BUTTRESS_ADMIN_TOKEN": TOKEN},
                        args=["--workers", "2"]) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page with every console message, page error and request it made recorded."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1366, "height": 768})
        self.errors: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("request", lambda r: self.requests.append((r.url, r.headers)))
        self.page.goto(url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def panel(self, name: str) -> Any:
        return self.page.locator(f'[data-panel="{name}"]')


class Traffic:
    """The demo's traffic driver for ``seconds`` (with a short model outage early on, if
    ``outage``), in a thread of its own while the test goes on; ``sent``: what it sent."""

    def __init__(self, base_url: str, seconds: float, seed: int, outage: bool = True) -> None:
        self.seconds = seconds
        self.sent: dict[Kind, int] = {}
        episodes = Episodes(outage_start=2.0, outage_every=45.0,
                            outage_for=1.0 if outage else 0.0)

        def run() -> None:
            report = asyncio.run(drive(base_url, duration=seconds, rate=120, concurrency=16,
                                       seed=seed, episodes=episodes))
            self.sent.update(report.sent)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def wait(self) -> dict[Kind, int]:
        self.thread.join(timeout=self.seconds + 60)
        assert not self.thread.is_alive()
        return self.sent


def served_versions(base_url: str, count: int = 10) -> set[str]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        return {http.post("/predict", json=demo_order(f"v-{i}-{time.monotonic()}"))
                .headers["x-model-version"] for i in range(count)}


def test_every_panel_shows_the_demo_traffic_with_no_console_error(
        server: RunningServer, browser: Browser) -> None:
    watched = Watched(browser, f"{server.base_url}/dashboard")
    try:
        expect(watched.page.locator("#status")).to_have_attribute("data-live", "yes")
        sent = Traffic(server.base_url, seconds=8, seed=7).wait()
        assert sent[Kind.RENAMED_KEY] > 0
        for name in PANELS:
            expect(watched.panel(name)).to_have_attribute("data-state", "data", timeout=20_000)
        expect(watched.panel("violations").locator(
            'tr[data-field="sub_orders[].seller_margin"]')).to_contain_text("renamed")
        expect(watched.panel("alerts").locator('[data-alert="renamed_keys"]')).to_have_attribute(
            "data-alert-state", "firing", timeout=20_000)
        expect(watched.panel("models").locator("tr[data-version]")).to_have_count(2)
        expect(watched.panel("insights").locator(
            '[data-query="mean_discount_by_model_version"]')).to_have_attribute("data-kind",
                                                                                 "lines")
        assert watched.page.locator('[data-panel="requests"] [data-value="rps"]').inner_text() \
            != "—"
        assert watched.errors == []
    finally:
        watched.page.close()


def test_the_rollback_button_needs_the_token_and_moves_the_served_version_back(
        server: RunningServer, browser: Browser, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        promoted = http.post("/admin/models/discount/promote", headers=admin,
                             json={"version": "v2", "reason": "the tour"})
        assert promoted.status_code == 200, promoted.text
    watched = Watched(browser, f"{server.base_url}/dashboard")
    page, models = watched.page, watched.panel("models")
    try:
        expect(models.locator('[data-model="discount"]')).to_have_attribute(
            "data-stable", "v2", timeout=20_000)
        expect(models.locator('tr[data-version="v2"]')).to_have_count(2, timeout=30_000)
        assert served_versions(server.base_url) == {"v2"}
        assert watched.errors == []

        # without the token: the server refuses, nothing moves
        models.locator('[data-action="rollback"]').click()
        expect(page.locator("#token-row")).to_be_visible()
        page.locator("#confirm-button").click()
        status = models.locator('[data-role="model-status"]')
        expect(status).to_contain_text("Refused (401)")
        expect(status).to_have_attribute("data-kind", "error")
        time.sleep(1.5)
        expect(models.locator('[data-model="discount"]')).to_have_attribute("data-stable", "v2")
        assert served_versions(server.base_url) == {"v2"}
        # the one expected complaint: Chromium logs the refused request itself ("Failed to
        # load resource: the server responded with a status of 401 (Unauthorized)")
        [refused_log] = watched.errors
        assert "status of 401" in refused_log

        # with the token: confirmed, rolled back, every replica follows
        models.locator('[data-action="rollback"]').click()
        expect(page.locator("#confirm-title")).to_have_text("Roll back discount?")
        expect(page.locator("#confirm-text")).to_contain_text("v2 → v1")
        page.locator("#token").fill(TOKEN)
        page.locator("#confirm-button").click()
        expect(status).to_contain_text("Every replica serves v1", timeout=30_000)
        expect(models.locator('[data-model="discount"]')).to_have_attribute("data-stable", "v1")
        expect(models.locator('tr[data-version="v1"]')).to_have_count(2)
        assert served_versions(server.base_url) == {"v1"}

        # the token went in a header only, and stays in this tab's session storage
        admin_calls = [(url, headers) for url, headers in watched.requests if "/admin/" in url]
        assert [headers.get("authorization") for _, headers in admin_calls] == [
            None, f"Bearer {TOKEN}"]
        assert not any(TOKEN in url for url, _ in watched.requests)
        assert page.url == f"{server.base_url}/dashboard"
        assert page.evaluate("() => sessionStorage.getItem('buttress.adminToken')") == TOKEN
        assert page.evaluate("() => document.cookie") == ""
        assert len(watched.errors) == 1

        # the business metric per model version: v2's few answers (above) beside v1's
        more = Traffic(server.base_url, seconds=25, seed=8, outage=False)
        mean_discount = watched.panel("insights").locator(
            '[data-query="mean_discount_by_model_version"] .legend > span')
        expect(mean_discount).to_have_count(2, timeout=60_000)
        expect(mean_discount.first).to_contain_text("v1")
        expect(mean_discount.last).to_contain_text("v2")
        page.wait_for_timeout(4000)  # live numbers while the traffic runs, for the picture
        screenshot(page, tmp_path / "dashboard.png")
        more.wait()
        assert len(watched.errors) == 1, watched.errors
    finally:
        page.close()


def screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    wanted = os.environ.get(SCREENSHOT_ENV)
    if wanted:
        Path(wanted).parent.mkdir(parents=True, exist_ok=True)
        Path(wanted).write_bytes(path.read_bytes())
