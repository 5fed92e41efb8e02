"""The processes of the two-zone test, each in its zone's namespace, all killed at the end.

Zone a: the Redis primary, a sentinel, buttress replicas a1 and a2. Zone b: a Redis replica,
a sentinel, replicas b1 and b2. Zone c: the third sentinel only (a witness: with one sentinel
per zone, either zone's loss leaves a majority of two to promote the other's Redis; two
sentinels in one zone would let that zone's loss stop every failover). HAProxy runs in the
root namespace on 127.0.0.1, in front of the four replicas.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from buttress.cli.server import wait_until_ready
from tests.servers import REPO, clean_environment, cli_command
from tests.support import free_port
from tests.zones.network import Zones

SERVICE = f"{REPO / 'tests/zones/zoned_service.py'}:svc"
MASTER = "buttress"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
REPLICAS = {"a1": ("a", 8001), "a2": ("a", 8002), "b1": ("b", 8001), "b2": ("b", 8002)}


@dataclass
class Cluster:
    zones: Zones
    workdir: Path
    service_name: str
    limit: int
    down_after_ms: int = 1000
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    haproxy_port: int = field(default_factory=free_port)

    @property
    def sentinel_url(self) -> str:
        hosts = ",".join(f"{self.zones.ip(zone)}:{SENTINEL_PORT}" for zone in "abc")
        return f"redis+sentinel://{hosts}/{MASTER}/0?timeout=100ms&connect_timeout=100ms"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.haproxy_port}"

    def redis_client(self, zone: str) -> redis.Redis:
        return redis.Redis(host=self.zones.ip(zone), port=REDIS_PORT, socket_timeout=0.5,
                           socket_connect_timeout=0.5)

    # --- starting --------------------------------------------------------------------------

    def start(self) -> None:
        self._start_redis("a")
        self._start_redis("b", replica_of=self.zones.ip("a"))
        for zone in "abc":
            self._start_sentinel(zone)
        for name in REPLICAS:
            self._start_replica(name)
        self._start_haproxy()
        self._wait_for_sentinels()
        for name, (zone, port) in REPLICAS.items():
            process = self.processes[name]
            try:
                wait_until_ready(f"http://{self.zones.ip(zone)}:{port}", 90,
                                 alive=lambda p=process: p.poll() is None)
            except (RuntimeError, TimeoutError) as error:
                log = (self.workdir / name / "server.log").read_text(errors="replace")
                raise RuntimeError(f"replica {name}: {error}\n{log}") from None

    def _spawn(self, name: str, zone: str, command: list[str], *,
               env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "server.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                self.zones.in_zone(zone, command) if zone != "root" else command,
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd or folder)

    def _start_redis(self, zone: str, replica_of: str | None = None) -> None:
        folder = self.workdir / f"redis-{zone}"
        command = [_binary("redis-server"), "--bind", self.zones.ip(zone), "--port",
                   str(REDIS_PORT), "--protected-mode", "no", "--save", "", "--appendonly",
                   "no", "--dir", str(folder), "--repl-diskless-sync-delay", "0",
                   "--repl-diskless-load", "on-empty-db"]
        if replica_of:
            command += ["--replicaof", replica_of, str(REDIS_PORT)]
        self._spawn(f"redis-{zone}", zone, command)

    def _start_sentinel(self, zone: str) -> None:
        folder = self.workdir / f"sentinel-{zone}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "sentinel.conf"  # Sentinel rewrites it: a file of its own
        config.write_text("\n".join([
            f"port {SENTINEL_PORT}", f"bind {self.zones.ip(zone)}", "protected-mode no",
            f"dir {folder}",
            f"sentinel monitor {MASTER} {self.zones.ip('a')} {REDIS_PORT} 2",
            f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER} 5000",
            f"sentinel parallel-syncs {MASTER} 1", ""]))
        self._spawn(f"sentinel-{zone}", zone, [_binary("redis-sentinel"), str(config)])

    def _start_replica(self, name: str) -> None:
        zone, port = REPLICAS[name]
        folder = self.workdir / name
        env = clean_environment(folder, {
            "BUTTRESS_BACKEND": self.sentinel_url, "BUTTRESS_CACHE_URL": "memory://",
            "ZONED_SERVICE_NAME": self.service_name, "ZONED_LIMIT": str(self.limit),
            "ZONED_REPLICA": name})
        self._spawn(name, zone, cli_command("serve", SERVICE, "--host", self.zones.ip(zone),
                                            "--port", str(port)), env=env)

    def _start_haproxy(self) -> None:
        servers = "\n".join(
            f"    server {name} {self.zones.ip(zone)}:{port} check"
            for name, (zone, port) in REPLICAS.items())
        config = self.workdir / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=self.haproxy_port, servers=servers))
        self._spawn("haproxy", "root", [_binary("haproxy"), "-db", "-f", str(config)])

    def _wait_for_sentinels(self, timeout: float = 30) -> None:
        """Until every sentinel knows the other two and the replica (their hellos travel
        every 2 s): a failover before that could not reach its quorum."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for zone in "abc":
                try:
                    client = redis.Redis(host=self.zones.ip(zone), port=SENTINEL_PORT,
                                         socket_timeout=0.5, socket_connect_timeout=0.5)
                    states.append(client.sentinel_master(MASTER))
                except redis.RedisError:
                    break
            if len(states) == 3 and all(s["num-other-sentinels"] == 2 and s["num-slaves"] == 1
                                        for s in states):
                return
            time.sleep(0.2)
        raise TimeoutError("the sentinels did not all see each other and the replica")

    # --- observing ---------------------------------------------------------------------------

    def role(self, zone: str) -> dict[str, object]:
        """``INFO replication`` of ``zone``'s Redis, or ``{}`` when it does not answer."""
        try:
            return dict(self.redis_client(zone).info("replication"))
        except redis.RedisError:
            return {}

    # --- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGKILL everything this cluster started (only those processes, by their ids)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (scripts/system-packages.sh installs it)")
    return path


# Health checks on /readyz every 500 ms (2 failures: down, 2 successes: up). A request whose
# connection cannot be made (a cut zone drops the SYN: connect timeout) is retried, each retry
# on another server (redispatch). A request already sent to a server that vanished is not
# retried: it may have been served, and a POST is not idempotent (a guardrail counted it).
HAPROXY_CONFIG = """\
global
    maxconn 1024

defaults
    mode http
    timeout connect 200ms
    timeout client 10s
    timeout server 1s
    timeout check 400ms
    retries 3
    option redispatch 1
    option http-buffer-request

frontend predict
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{servers}
"""
