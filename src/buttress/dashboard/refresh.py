"""When the dashboard's insight charts are refreshed, and where: now and then, in a process
of its own (:mod:`buttress.dashboard.query_worker`).

A page polls every second; DuckDB reads event files. So the queries never run on a poll: a
poll gets the last charts and, when they are due, starts one refresh in the background
(single flight: any number of open pages cause one run). A refresh is due ``REFRESH`` seconds
after the last one ended, or later when the last one was slow: never sooner than
``1 / COST_SHARE`` times its own duration, so the charts take at most a tenth of one core
however large the event files grow. Nobody looking, nothing runs: the worker process is
started at the first refresh and stopped after ``IDLE_STOP`` seconds without a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from buttress.dashboard.charts import WINDOW, Chart

log = logging.getLogger("buttress.dashboard")

REFRESH = 5.0
"""Seconds between two refreshes, at least."""
COST_SHARE = 0.1
"""The share of one core the refreshes may take, at most."""
IDLE_STOP = 60.0
"""Seconds without a poll after which the query process is stopped."""
TIMEOUT = 300.0
"""A refresh taking longer is given up (its process killed)."""

Run = Callable[[float], Awaitable[list[Chart]]]


class InsightCharts:
    """The charts of the saved queries ``queries`` (name -> SQL) over ``events_dir``.

    ``run`` replaces the query process (tests); ``clock`` is wall time (the queries' window),
    ``timer`` measures how long a refresh took."""

    def __init__(self, events_dir: str | Path, queries: Mapping[str, str], *,
                 run: Run | None = None, clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.events_dir = Path(events_dir).resolve()
        self.queries = dict(queries)
        self._run = run or self._in_worker
        self._clock = clock
        self._timer = timer
        self._charts: list[Chart] = [{"name": name, "kind": "pending"} for name in self.queries]
        self._due = 0.0
        self._polled = 0.0
        self._task: asyncio.Task[None] | None = None
        self._worker: asyncio.subprocess.Process | None = None
        self._idle: asyncio.TimerHandle | None = None
        self.ran_at: float | None = None
        self.seconds: float | None = None
        """How long the last refresh took."""

    def current(self) -> dict[str, Any]:
        """The last charts (``pending`` before the first refresh); starts a refresh if due."""
        self._polled = self._timer()
        now = self._clock()
        if self.queries and self._task is None and self._polled >= self._due:
            self._task = asyncio.get_running_loop().create_task(self._refresh(now),
                                                                name="dashboard-insights")
        return {"ran_at": self.ran_at, "seconds": self.seconds, "window_s": WINDOW,
                "charts": self._charts}

    async def _refresh(self, now: float) -> None:
        started = self._timer()
        try:
            self._charts = await asyncio.wait_for(self._run(now), TIMEOUT)
            self.ran_at = now
        except Exception:  # a refresh failing must not stop the next one
            log.exception("dashboard insight charts failed")
            await self._stop_worker()
        finally:
            self.seconds = self._timer() - started
            self._due = self._timer() + max(REFRESH, self.seconds / COST_SHARE)
            self._task = None
            self._watch_idle()

    # -- the query process -----------------------------------------------------------------

    async def _in_worker(self, now: float) -> list[Chart]:
        worker = self._worker
        if worker is None or worker.returncode is not None:
            worker = self._worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "buttress.dashboard.query_worker", env=_same_buttress(),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert worker.stdin is not None
        assert worker.stdout is not None
        request = {"events_dir": str(self.events_dir), "queries": self.queries, "now": now}
        worker.stdin.write(orjson.dumps(request) + b"\n")
        await worker.stdin.drain()
        line = await worker.stdout.readline()
        if not line:
            raise RuntimeError(f"the query process exited ({await worker.wait()})")
        charts: list[Chart] = orjson.loads(line)
        return charts

    def _watch_idle(self) -> None:
        if self._worker is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(IDLE_STOP, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        self._idle = None
        if self._task is None and self._timer() - self._polled >= IDLE_STOP:
            asyncio.get_running_loop().create_task(self._stop_worker())
        else:
            self._watch_idle()

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None or worker.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            worker.kill()
        await worker.wait()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._idle is not None:
            self._idle.cancel()
        await self._stop_worker()


def _same_buttress() -> dict[str, str]:
    """The environment for the query process: this one's, with the folder this buttress was
    imported from first on its path, so it runs the same code as the server."""
    import buttress

    root = str(Path(buttress.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, path] if path else [root])}
