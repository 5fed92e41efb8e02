"""Load-test harness: start a server pinned to one core, drive it with wrk pinned to the other.

The machine is shared and noisy, so every table compares scenarios run back to back in the
same process against a raw Starlette baseline, and reports ratios next to absolute numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "0")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "1")


@dataclass(frozen=True)
class Result:
    name: str
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: str, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else list(argv)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads, from /proc: the figure that moves
    least on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess on a free port; ``argv`` may contain ``{port}``."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None,
                 ready_path: str = "/readyz") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.TemporaryDirectory(prefix="buttress-bench-")
        full_env = {**os.environ, "BUTTRESS_EVENTS_DIR": f"{self.tmp.name}/events",
                    "BUTTRESS_LOG_LEVEL": "warning", **(env or {})}
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, [a.format(port=self.port) for a in argv]),
            cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait(ready_path)

    def _wait(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.url} not ready")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.tmp.cleanup()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
"""


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(name: str, url: str, body: str, *, connections: int, duration: float = 10.0,
        threads: int = 1) -> Result:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (scripts/system-packages.sh)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT.format(body=body))
    out = subprocess.run(
        pinned(LOAD_CPU, ["wrk", "-t", str(threads), "-c", str(connections),
                          "-d", f"{int(duration)}s", "--latency", "-s", script.name, url]),
        capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    p = {k: _ms(*re.match(r"([\d.]+)(\w+)", v).groups()) for k, v in lat.items()}  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", out)
    return Result(name, connections, rps, p.get("50", 0.0), p.get("99", 0.0),
                  int(non_2xx.group(1)) if non_2xx else 0,
                  sum(map(int, errors.groups())) if errors else 0)


def table(results: Sequence[Result], baseline: str) -> str:
    """A Markdown table; ``ratio`` is requests/s relative to ``baseline`` at the same load."""
    base = {r.connections: r.requests_per_s for r in results if r.name == baseline}
    lines = ["| scenario | conns | req/s | ratio vs " + baseline + " | p50 ms | p99 ms | non-2xx "
             "| socket errors |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = r.requests_per_s / base[r.connections] if base.get(r.connections) else float("nan")
        lines.append(f"| {r.name} | {r.connections} | {r.requests_per_s:,.0f} | {ratio:.2f} | "
                     f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.non_2xx} | {r.errors} |")
    return "\n".join(lines)


# -- varied, realistic demo orders, and wrk counting healthy answers ----------------------

N_USERS, N_PRODUCTS = 5000, 2000  # the demo's known ids: 1..N (buttress.demo.data)


def varied_orders(n: int = 2000, seed: int = 11) -> list[str]:
    """``n`` demo orders of known users and products, 1 to 5 sub-orders each: what a
    throughput claim is measured with (one order sent again and again flatters caches)."""
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(n):
        subs = [{"sub_order_id": f"so-{j}", "product_id": int(rng.integers(1, N_PRODUCTS + 1)),
                 "price": round(float(np.exp(rng.uniform(np.log(50), np.log(5000)))), 2),
                 "margin": round(float(rng.uniform(0.05, 0.4)), 3),
                 "quantity": int(rng.integers(1, 3))}
                for j in range(int(rng.integers(1, 6)))]
        bodies.append(json.dumps({"order_id": f"o-{i}",
                                  "user": {"id": int(rng.integers(1, N_USERS + 1)),
                                           "app_version": "5.12.0"},
                                  "sub_orders": subs}))
    return bodies


_COUNTING_SCRIPT = """
local bodies = {%s}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) healthy = 0; degraded = 0; shed = 0; failed = 0; i = 0 end
request = function()
  i = i + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"},
                    bodies[(i %% #bodies) + 1])
end
response = function(status, headers, body)
  if status >= 300 then failed = failed + 1; return end
  local f = headers["x-fallback"]
  if f == nil then healthy = healthy + 1
  elseif string.find(f, "overloaded") then shed = shed + 1
  else degraded = degraded + 1 end
end
done = function(summary, latency, requests)
  local h, d, s, f = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    h = h + t:get("healthy"); d = d + t:get("degraded"); s = s + t:get("shed")
    f = f + t:get("failed")
  end
  io.write(string.format("COUNTS %%d %%d %%d %%d\\n", h, d, s, f))
end
"""


def counting_script(bodies: Sequence[str]) -> str:
    """A wrk script file cycling through ``bodies`` and counting healthy answers (2xx, no
    ``X-Fallback``), degraded ones, shed ones (``overloaded``) and failures. Delete it after."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(_COUNTING_SCRIPT % ",".join(f"[==[{b}]==]" for b in bodies))
    return lua.name


@dataclass
class Counted:
    """One wrk run's answers by kind, and its latency percentiles (all answers)."""

    name: str
    connections: int
    seconds: float
    healthy: int
    degraded: int
    shed: int
    failed: int
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def total(self) -> int:
        return self.healthy + self.degraded + self.shed + self.failed

    def rate(self, count: int | None = None) -> float:
        return (self.total if count is None else count) / self.seconds

    @property
    def healthy_share(self) -> float:
        return self.healthy / max(self.total, 1)


def wrk_counting(name: str, url: str, script: str, *, connections: int,
                 duration: float) -> Counted:
    """wrk on ``url`` + ``/predict`` with a :func:`counting_script`."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (scripts/system-packages.sh)")
    out = subprocess.run(
        pinned(LOAD_CPU, ["wrk", "-t", "1", "-c", str(connections), "-d", f"{int(duration)}s",
                          "--latency", "-s", script, url + "/predict"]),
        capture_output=True, text=True, check=True).stdout
    counts = re.search(r"COUNTS (\d+) (\d+) (\d+) (\d+)", out)
    assert counts is not None, out
    seconds = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    p = {k: _ms(*re.match(r"([\d.]+)(\w+)", v).groups()) for k, v in lat.items()}  # type: ignore[union-attr]
    return Counted(name, connections, seconds, *map(int, counts.groups()),
                   p50_ms=p.get("50", 0.0), p99_ms=p.get("99", 0.0))
