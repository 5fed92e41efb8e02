"""Test support: free ports, a private redis-server, and waiting for a server to come up.

Tests that stop or break Redis start their own ``redis-server`` here and kill only that one;
tests that merely need Redis use the machine's 127.0.0.1:6379 with their own key prefix.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from buttress.config import Settings
    from buttress.pipeline.runtime import Runtime
    from buttress.service import Service

MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"
# The backend matrices' Sentinel entry: ``{sentinels}`` becomes the host:port of the private
# sentinel the session starts (the ``sentinel_redis`` fixture), so the same contract tests run
# over a redis+sentinel:// URL.
SENTINEL_URL_TEMPLATE = "redis+sentinel://{sentinels}/buttress-test/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def unique_prefix(name: str = "test") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def matrix_url(url: str, request: Any, tmp_path: Path | None = None) -> str:
    """A backend matrix entry made usable: a ``sqlite:///{tmp_path}/...`` one lands in this
    test's folder, the Sentinel entry gets the session's private sentinel, a ``redis://`` one
    first checks that the machine's Redis is up."""
    if url.startswith("sqlite") and tmp_path is not None:
        return url.format(tmp_path=tmp_path)
    if url == SENTINEL_URL_TEMPLATE:
        sentinel: PrivateSentinel = request.getfixturevalue("sentinel_redis")
        return sentinel.url
    if url.startswith("redis"):
        request.getfixturevalue("machine_redis_url")
    return url


def machine_redis_available() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", 6379)) == 0


class FakeClock:
    """A clock tests move by hand: policies take ``clock=`` so tests never sleep."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class PrivateRedis:
    """A redis-server of our own on a free port; ``stop()`` and ``start()`` break and heal it."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()  # e.g. ("--replicaof", "127.0.0.1", "6380")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@dataclass
class PrivateSentinel:
    """A primary of our own watched by one ``redis-sentinel`` of our own (quorum 1), on free
    ports: what a ``redis+sentinel://`` URL needs, for the component contract tests."""

    workdir: Path
    service: str = "buttress-test"
    primary: PrivateRedis = field(default_factory=PrivateRedis)
    count: int = 1  # sentinels (quorum: a majority of them)
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    with_replica: bool = False  # a replica of the primary, for failover tests
    down_after_ms: int = 1000
    replica: PrivateRedis | None = None

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self) -> None:
        binary = shutil.which("redis-sentinel")
        if binary is None:
            raise RuntimeError("redis-sentinel is not installed (apt-get install redis-sentinel)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # a full sync at once (not after the default 5 s delay), and nothing on disk
        quick_sync = ("--dir", str(self.workdir), "--repl-diskless-sync-delay", "0",
                      "--repl-diskless-load", "on-empty-db")
        self.primary.extra_args = quick_sync
        self.primary.start()
        if self.with_replica:
            self.replica = PrivateRedis(
                extra_args=(*quick_sync, "--replicaof", "127.0.0.1", str(self.primary.port)))
            self.replica.start()
        quorum = self.count // 2 + 1
        for index in range(self.count):
            port = free_port()
            config = self.workdir / f"sentinel-{index}.conf"  # Sentinel rewrites its file
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} 10000\n")
            self.processes.append(subprocess.Popen(
                [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.ports.append(port)
            wait_for_port(port)

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(timeout=10)
        self.processes.clear()
        self.primary.stop()
        if self.replica is not None:
            self.replica.stop()


@dataclass
class ServiceBackend:
    """One backend of the service-level matrix, and the service names (Redis namespaces) a
    test used, so exactly those keys are deleted afterwards."""

    url: str
    workdir: Path
    names: list[str] = field(default_factory=list)

    @property
    def is_redis(self) -> bool:
        return self.url.startswith("redis")

    def name(self, label: str) -> str:
        name = unique_prefix(label)
        self.names.append(name)
        return name

    def settings(self, **overrides: Any) -> Settings:
        """Settings putting caches and guardrails on this backend, with a roomy deadline."""
        from buttress.config import Settings

        values: dict[str, Any] = {
            "cache_url": self.url, "guardrails_url": self.url,
            "events_dir": str(self.workdir / "events"), "deadline": 2.0, "max_deadline": 2.0,
            **overrides}
        return Settings(**values)


async def evalsha_calls(client: Any) -> int:
    """How many EVALSHA calls the Redis server behind ``client`` has served: round trips of
    the scripts buttress runs (cache reads, feature look-ups), to count them in a test."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def delete_namespaces(url: str, names: Sequence[str]) -> None:
    """Remove the keys of these services only, never anything else on the shared Redis."""
    from buttress.backends import Connections

    connections = Connections()
    try:
        client = connections.redis(url)
        for name in names:
            keys = [k async for k in client.scan_iter(match=f"buttress:{{{name}}}:*", count=1000)]
            if keys:
                await client.delete(*keys)
    finally:
        await connections.aclose()


@asynccontextmanager
async def started(svc: Service, settings: Settings) -> AsyncIterator[Runtime]:
    """A built and started runtime of ``svc``, stopped at the end."""
    runtime = svc.build(settings)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
