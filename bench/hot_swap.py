"""How fast a registry change reaches every replica, and what it costs the clients.

    .venv/bin/python bench/hot_swap.py [--rate 60] [--concurrency 4]

Starts a redis-server of its own and two ``buttress serve buttress.demo.service:svc``
replicas sharing it as their registry (``BUTTRESS_REGISTRY_URL``), with one models folder.
A bounded load (``--rate`` requests per second per replica, varied known orders, guardrails
lifted) runs throughout while it

1. promotes ``v3`` (a re-release of v1) and waits for both replicas, then runs
   ``buttress models rollback discount``: seconds from the registry's write to the last
   replica answering with v1;
2. lets v1 serve ``min_requests`` again, then runs ``buttress models promote discount v2``
   (the over-generous version): seconds from the promotion to the demo's rollback rule
   having rolled it back on every replica.

Each phase also counts failed requests (not 200, or any fallback). Prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import varied_orders

from buttress.cli.server import wait_until_ready
from buttress.registry import Registry
from tests.support import free_port, wait_for_port

TOKEN = "bench"
GUARDRAILS = ("discount_value_per_minute", "discounted_orders_per_user_per_hour")


@dataclass
class Sent:
    started: float
    replica: int
    status: int
    version: str
    fallback: str


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    wait_for_port(port)
    return process


def start_replica(n: int, root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    workdir = root / f"replica-{n}"
    workdir.mkdir()
    replica_env = {**env, "BUTTRESS_EVENTS_DIR": str(workdir / "events"),
                   "BUTTRESS_METRICS_DIR": str(workdir / "prometheus")}
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "buttress.cli", "serve",
                                "buttress.demo.service:svc", "--port", str(port)],
                               cwd=workdir, env=replica_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, 120, alive=lambda: process.poll() is None)
    for name in GUARDRAILS:
        httpx.post(f"{url}/admin/guardrails/{name}", json={"limit": 1e9},
                   headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
    return process, url


async def drive(urls: list[str], rate: float, concurrency: int, sent: list[Sent],
                stop: asyncio.Event) -> None:
    bodies = varied_orders()

    async def client(replica: int, url: str, k: int, http: httpx.AsyncClient) -> None:
        i, interval = k, concurrency / rate
        next_at = time.monotonic()
        while not stop.is_set():
            started = time.time()
            try:
                r = await http.post(f"{url}/predict", content=bodies[i % len(bodies)])
                sent.append(Sent(started, replica, r.status_code,
                                 r.headers.get("x-model-version", ""),
                                 r.headers.get("x-fallback", "")))
            except httpx.HTTPError as error:
                sent.append(Sent(started, replica, 0, "", type(error).__name__))
            i += concurrency
            next_at = max(next_at + interval, time.monotonic())  # behind: no catch-up burst
            await asyncio.sleep(next_at - time.monotonic())

    async with httpx.AsyncClient(timeout=5) as http:
        await asyncio.gather(*(client(n, url, k, http) for n, url in enumerate(urls)
                               for k in range(concurrency)))


def switched_at(sent: list[Sent], replica: int, since: float, version: str) -> float | None:
    """When ``replica`` started answering with ``version`` for good after ``since``: the
    start of its first such request after its last request answered otherwise."""
    mine = [s for s in sent if s.replica == replica and s.started >= since and s.status == 200]
    last_other = max((s.started for s in mine if s.version != version), default=since)
    after = [s.started for s in mine if s.version == version and s.started > last_other]
    return min(after) if after else None


def failures(sent: list[Sent], start: float, end: float) -> tuple[int, int]:
    window = [s for s in sent if start <= s.started <= end]
    return sum(1 for s in window if s.status != 200 or s.fallback), len(window)


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "buttress.cli", "models", *args], env=env,
                   check=True, capture_output=True)


async def wait_for(sent: list[Sent], replicas: int, since: float, version: str,
                   within: float) -> list[float]:
    deadline = time.time() + within
    while time.time() < deadline:
        await asyncio.sleep(0.2)
        times = [switched_at(sent, n, since, version) for n in range(replicas)]
        # for good: the newest answers of every replica (past 0.5 s) are all this version
        recent = [s for s in sent if s.started > time.time() - 1.0 and s.status == 200]
        if all(t is not None for t in times) and all(s.version == version for s in recent):
            return [t for t in times if t is not None]
    raise TimeoutError(f"not every replica serves {version} within {within}s")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=60.0, help="requests/s per replica")
    parser.add_argument("--concurrency", type=int, default=4, help="connections per replica")
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="buttress-hot-swap-"))
    redis_port = free_port()
    redis = start_redis(redis_port)
    url = f"redis://127.0.0.1:{redis_port}/0?timeout=1s"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUTTRESS_")}
    env.update({"BUTTRESS_REGISTRY_URL": url, "BUTTRESS_MODELS_DIR": str(root / "models"),
                "BUTTRESS_ADMIN_TOKEN": TOKEN, "BUTTRESS_LOG_LEVEL": "warning"})
    processes = []
    try:
        for n in range(2):  # the first registers v1 and v2
            processes.append(start_replica(n, root, env))
        urls = [u for _, u in processes]
        sent: list[Sent] = []
        stop = asyncio.Event()
        load = asyncio.ensure_future(drive(urls, options.rate, options.concurrency, sent, stop))
        async with Registry(url, models_dir=root / "models") as registry:
            v1 = await registry.version("discount", "v1")
            v3 = await registry.register("discount", root / "models" / v1.path, who="bench",
                                         allow_pickle=True, notes="a re-release of v1")
            await registry.promote("discount", v3.version, who="bench")
            await wait_for(sent, 2, time.time(), v3.version, 30)
            await asyncio.sleep(2)

            typed = time.time()
            cli(env, "rollback", "discount", "--reason", "bench: manual rollback")
            rolled = (await registry.history("discount", limit=1))[0]
            back = await wait_for(sent, 2, rolled.at, "v1", 30)
            manual, manual_cli = max(back) - rolled.at, max(back) - typed
            manual_failed = failures(sent, rolled.at - 1, max(back) + 1)

            await asyncio.sleep(6)  # v1 serves the rule's min_requests on each replica again
            typed = time.time()
            cli(env, "promote", "discount", "v2", "--reason", "bench: the over-generous v2")
            promoted = (await registry.history("discount", limit=1))[0]
            await wait_for(sent, 2, promoted.at, "v2", 30)
            back = await wait_for(sent, 2, promoted.at, "v1", 60)
            automatic, automatic_cli = max(back) - promoted.at, max(back) - typed
            auto_failed = failures(sent, promoted.at - 1, max(back) + 1)
            history = await registry.history("discount", limit=2)
        stop.set()
        await load
    finally:
        for process, _ in processes:
            process.send_signal(signal.SIGTERM)
        for process, _ in processes:
            process.wait(timeout=30)
        redis.kill()
        redis.wait()
    span = max(s.started for s in sent) - min(s.started for s in sent)
    print(f"2 replicas, {options.rate:g} req/s each asked ({len(sent) / span / 2:.0f} sent), "
          f"{options.concurrency} connections each; {len(sent)} requests in all\n")
    print("| change | s from the registry write until every replica serves v1 | s from "
          "typing the command | failed / requests in the window |")
    print("|---|---|---|---|")
    print(f"| `buttress models rollback` (v3 -> v1) | {manual:.2f} | {manual_cli:.2f} | "
          f"{manual_failed[0]} / {manual_failed[1]} |")
    print(f"| `buttress models promote discount v2` -> rule -> automatic rollback | "
          f"{automatic:.2f} | {automatic_cli:.2f} | {auto_failed[0]} / {auto_failed[1]} |")
    print(f"\nlast change: {history[-1].action} by {history[-1].who}: {history[-1].why}")
    print(f"(work folder: {root})")


if __name__ == "__main__":
    asyncio.run(main())
