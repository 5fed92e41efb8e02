"""Real ``buttress serve`` processes for the server tests.

Each server runs ``python -m buttress.cli serve TARGET`` on a free port, in its own working
directory, with its events (``BUTTRESS_EVENTS_DIR``) and Prometheus files
(``BUTTRESS_METRICS_DIR``) there, so tests can read exactly what one server wrote. Events are
flushed on shutdown: read them after :meth:`RunningServer.stop`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from buttress.cli.server import wait_until_ready
from tests.support import free_port

REPO = Path(__file__).resolve().parents[1]
DEMO = "buttress.demo.service:svc"  # a module target: the demo ships in the package
FAULTY = f"{REPO / 'tests/services/faulty.py'}:svc"

# One OpenMP thread per model call: on a 2-core machine shared with other processes,
# No OMP_NUM_THREADS here on purpose: buttress caps OpenMP in each model thread itself
# (model_native_threads), and the tests must see what users get.
QUIET_ENV = {"BUTTRESS_LOG_LEVEL": "warning"}


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "buttress.cli", *args]


def clean_environment(workdir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test runner's environment without any BUTTRESS_*/Prometheus setting of its own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BUTTRESS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(QUIET_ENV)
    env["BUTTRESS_EVENTS_DIR"] = str(workdir / "events")
    env["BUTTRESS_METRICS_DIR"] = str(workdir / "prometheus")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_dir(self) -> Path:
        return self.workdir / "events"

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for the exit, return the exit code (idempotent)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return (self.workdir / "server.log").read_text(errors="replace")

    def events(self, kind: str | None = "request") -> list[dict[str, Any]]:
        """The events of ``kind`` (request, exception, alert; None: all) the server wrote,
        from all its per-process files."""
        events = [orjson.loads(line) for path in sorted(self.events_dir.glob("*.jsonl"))
                  for line in path.read_bytes().splitlines() if line.strip()]
        return [e for e in events if kind is None or e.get("kind", "request") == kind]

    def metrics(self) -> str:
        return httpx.get(f"{self.base_url}/metrics", timeout=5).text


def wait_ready(server: RunningServer, timeout: float) -> None:
    """The CLI's own readiness wait, with the server's output when it fails."""
    try:
        wait_until_ready(server.base_url, timeout, alive=lambda: server.process.poll() is None)
    except (RuntimeError, TimeoutError) as error:
        raise type(error)(f"{error}:\n{server.output()}") from None


def spawn_server(
    target: str,
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    port: int | None = None,
    append_log: bool = False,
) -> RunningServer:
    """Start ``buttress serve target`` in ``workdir`` on ``port`` (a free one by default),
    without waiting: a test that kills a server restarts it on the same port with this
    (``append_log`` keeps the first run's output in ``workdir/server.log``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    with (workdir / "server.log").open("ab" if append_log else "wb") as log:
        process = subprocess.Popen(
            cli_command("serve", target, "--port", str(port), *args),
            cwd=workdir, env=clean_environment(workdir, env), stdout=log,
            stderr=subprocess.STDOUT)
    return RunningServer(process, port, workdir)


@contextmanager
def running_server(
    target: str,
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    ready_timeout: float = 60.0,
) -> Iterator[RunningServer]:
    """Start ``buttress serve target`` in ``workdir``, wait for /readyz, stop it at the end."""
    server = spawn_server(target, workdir, env=env, args=args)
    process = server.process
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                total += sample.value
    return total
