"""Two replicas of the fault service sharing one private ``redis-server``, and their faults.

Each replica is a ``buttress serve`` process on a port of its own (tests/servers.py), in a
folder of its own; both put the feature store, the caches and the guardrail counters on
``redis_url`` (the private Redis, or a proxy in front of it) with a 50 ms Redis timeout, as
the README advises. The Redis is the test's own (tests/support.py), on a free port, with an
append-only file: a restarted Redis finds its features and guardrail counts again, as one in
production would (without it a restart forgets every budget spent; Redis's own choice).

Each replica's event directory is a tmpfs of its own when the test may mount one (root), so
a test can fill that disk; the event files rotate every second, so a directory made
read-only is felt within a second (an open file stays writable on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.reliability.fault_service import seed
from tests.reliability.load import HEALTHY_FALLBACKS
from tests.servers import REPO, RunningServer, metric_value, spawn_server, wait_ready
from tests.support import PrivateRedis, unique_prefix

TARGET = f"{REPO / 'tests/reliability/fault_service.py'}:svc"
ADMIN_TOKEN = "faults-under-load"
REDIS_TIMEOUT = "50ms"
EVENTS_DISK = "32m"


def persistent_redis(folder: Path) -> PrivateRedis:
    """A private Redis that writes every change to an append-only file before answering."""
    folder.mkdir(parents=True, exist_ok=True)
    return PrivateRedis(extra_args=("--appendonly", "yes", "--appendfsync", "everysec",
                                    "--dir", str(folder),
                                    "--logfile", str(folder / "redis.log")))


def mount(*args: str) -> bool:
    """Run ``mount`` (or ``umount``) with ``args``; whether it worked."""
    if os.geteuid() != 0:
        return False
    done = subprocess.run(args, capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@dataclass
class Replicas:
    workdir: Path
    redis: PrivateRedis
    redis_url: str
    count: int = 2
    name: str = field(default_factory=lambda: unique_prefix("faults"))
    servers: list[RunningServer] = field(default_factory=list)
    tmpfs: list[Path] = field(default_factory=list)
    read_only: bool = False
    _probes: int = 0
    ledger: Counter[int] = field(default_factory=Counter)
    """Answers that handed out a discount, per user, over every load of the session."""

    @property
    def urls(self) -> list[str]:
        return [server.base_url for server in self.servers]

    @property
    def fault_dir(self) -> Path:
        return self.workdir / "switch"

    @property
    def events_on_tmpfs(self) -> bool:
        return len(self.tmpfs) == self.count

    def folder(self, index: int) -> Path:
        return self.workdir / f"replica-{index}"

    def env(self) -> dict[str, str]:
        return {"BUTTRESS_BACKEND": f"{self.redis_url}?timeout={REDIS_TIMEOUT}",
                "BUTTRESS_ADMIN_TOKEN": ADMIN_TOKEN, "BUTTRESS_EVENTS_ROTATE_INTERVAL": "1s",
                "FAULT_SERVICE_NAME": self.name, "FAULT_DIR": str(self.fault_dir)}

    # -- starting and stopping ---------------------------------------------------------------

    def start(self) -> None:
        self.fault_dir.mkdir(parents=True, exist_ok=True)
        self.set_model_fault("")
        asyncio.run(seed(self.redis.url, self.name))
        for index in range(self.count):
            events = self.folder(index) / "events"
            events.mkdir(parents=True, exist_ok=True)
            if mount("mount", "-t", "tmpfs", "-o", f"size={EVENTS_DISK}", "tmpfs", str(events)):
                self.tmpfs.append(events)
            self.servers.append(spawn_server(TARGET, self.folder(index), env=self.env()))
        for server in self.servers:
            wait_ready(server, 90)

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.stop()
        for events in self.tmpfs:  # lazily: a killed server's file may still be open
            mount("umount", "-l", str(events))
        self.tmpfs.clear()

    def kill(self, index: int) -> None:
        """SIGKILL replica ``index``: no draining, its buffered events are lost."""
        process = self.servers[index].process
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, index: int) -> None:
        """Start replica ``index`` again on its port (not waiting for it to be ready)."""
        old = self.servers[index]
        self.servers[index] = spawn_server(TARGET, old.workdir, env=self.env(), port=old.port,
                                           append_log=True)

    def set_model_fault(self, mode: str) -> None:
        """``raise``, ``slow`` or ``""`` for every replica (read within 100 ms)."""
        (self.fault_dir / "model").write_text(mode)

    # -- observing ---------------------------------------------------------------------------

    def events(self, run: str) -> dict[str, list[float]]:
        """The request events of ``run`` over both replicas: each request id's latencies
        (``latency_ms``), one per event it has. A line that is not JSON is skipped here
        (:meth:`torn_lines` counts them)."""
        found: dict[str, list[float]] = defaultdict(list)
        prefix = f'"request_id":"{run}-'.encode()
        for line in self._event_lines():
            if prefix in line:
                with contextlib.suppress(orjson.JSONDecodeError):
                    event = orjson.loads(line)
                    if event.get("kind") == "request":
                        found[event["request_id"]].append(event["latency_ms"])
        return found

    def torn_lines(self) -> int:
        """Lines of the event files that are not one JSON event each."""
        torn = 0
        for line in self._event_lines():
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                torn += 1
        return torn

    def _event_lines(self) -> Iterator[bytes]:
        for server in self.servers:
            for path in sorted(server.events_dir.glob("*.jsonl")):
                yield from path.read_bytes().splitlines()

    def fill_event_disks(self) -> None:
        """Fill each replica's event tmpfs with a file of nothing, to the last byte."""
        block = bytes(1 << 20)
        for events in self.tmpfs:
            with (events / "filler").open("wb", buffering=0) as filler:
                with contextlib.suppress(OSError):
                    while True:
                        filler.write(block)
                with contextlib.suppress(OSError):
                    while True:
                        filler.write(block[:4096])

    def free_event_disks(self) -> None:
        for events in self.tmpfs:
            (events / "filler").unlink(missing_ok=True)

    def event_dirs_read_only(self, read_only: bool) -> None:
        """Put a read-only bind mount over each replica's event directory, or take it off
        (nothing when it is already so)."""
        if read_only == self.read_only:
            return
        self.read_only = read_only
        for events in self.tmpfs:
            done = (mount("mount", "--bind", "-o", "ro", str(events), str(events)) if read_only
                    else mount("umount", str(events)))
            assert done, f"could not {'mount' if read_only else 'unmount'} over {events}"

    def events_dropped(self) -> float:
        return sum(metric_value(server.metrics(), "buttress_events_dropped_total")
                   for server in self.servers)

    def fallbacks(self, category: str) -> float:
        """``buttress_fallbacks_total`` of ``category`` (every stage), over both replicas."""
        return sum(metric_value(server.metrics(), "buttress_fallbacks_total", category=category)
                   for server in self.servers)

    def status(self) -> list[str]:
        """Each replica's ``/admin/status`` (breakers, cache counters), or why there is none."""
        found = []
        for server in self.servers:
            try:
                found.append(httpx.get(f"{server.base_url}/admin/status", timeout=5,
                                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text)
            except httpx.HTTPError as error:
                found.append(f"{server.base_url}: {error!r}")
        return found

    def guardrail_used(self) -> dict[str, float]:
        """What the guardrail's counters in Redis say the 10 busiest users were granted
        today (the hot users among them)."""
        response = httpx.get(f"{self.urls[0]}/admin/guardrails", timeout=5,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        response.raise_for_status()
        (guardrail,) = response.json()["guardrails"]
        return {str(usage["key"]): float(usage["used"]) for usage in guardrail["usage"]}

    async def wait_healthy(self, within: float = 20.0) -> float:
        """Until every replica answers a fresh order with no fallback; seconds it took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with httpx.AsyncClient(timeout=2.0) as client, asyncio.timeout(within):
            for n in itertools.count(self._probes, len(self.urls)):
                self._probes = n + len(self.urls)
                answers = [await _probe(client, url, n + i) for i, url in enumerate(self.urls)]
                if all(answers):
                    break
                await asyncio.sleep(0.2)
        return loop.time() - started


async def _probe(client: httpx.AsyncClient, url: str, n: int) -> bool:
    """A fresh order of a user of its own: answered with no fallback (a spent budget aside:
    the probes of a long session spend their users' budgets too)."""
    order: dict[str, Any] = {"order_id": f"health-{n}", "user": {"id": 1000 + n % 3000},
                             "sub_orders": [{"sub_order_id": "a", "product_id": 7,
                                             "price": 100.0, "margin": 0.2}]}
    try:
        response = await client.post(f"{url}/predict", json=order)
    except httpx.HTTPError:
        return False
    fallbacks = set(filter(None, response.headers.get("x-fallback", "").split(",")))
    return response.status_code == 200 and fallbacks <= HEALTHY_FALLBACKS
