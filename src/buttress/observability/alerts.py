"""Alert rules evaluated inside the server, with their actions.

Every ``interval`` the evaluator reads the numbers its rules watch (metrics from the service's
own registry, or every worker's files under ``--workers N``; insight queries over the recent
event files, in a thread) and moves each rule through inactive -> pending -> firing ->
resolved, as Prometheus does: a rule fires once its condition has held for ``for``. Firing
and resolving are each an event (``kind: alert``), the gauge ``buttress_alerts_firing``, and
the rule's actions: ``log``, ``webhook`` (a Slack-compatible ``{"text": ...}`` POST) and
``rollback``, which does nothing but log until a model registry plugs its own in
(``Service.alert_action("rollback")``).

With ``--workers N`` only one process evaluates: the one holding an ``flock`` on a file in the
shared metrics directory; when it exits the kernel releases the lock and another worker
takes over at its next round, carrying on from the state file its predecessor wrote (so a
firing alert is not notified twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from prometheus_client.metrics_core import Metric

from buttress.observability.alert_rules import AlertRule
from buttress.observability.alert_values import MetricHistory, RuleValues, query_values
from buttress.observability.events import SCHEMA_VERSION, Event
from buttress.observability.metrics import ServiceMetrics, multiprocess_enabled

if TYPE_CHECKING:
    from buttress.config import Settings

log = logging.getLogger("buttress.alerts")

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"
WEBHOOK_TIMEOUT = 5.0
# a state file younger than this many rounds is a predecessor's to carry on from
TAKE_OVER_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """What an action receives: a rule that started firing or resolved."""

    service: str
    rule: AlertRule
    state: str  # "firing" or "resolved"
    value: float | None
    ts: float

    def text(self) -> str:
        what = self.rule.summary or self.rule.describe()
        value = "no data" if self.value is None else f"{self.value:.4g}"
        labels = "".join(f" {k}={v}" for k, v in sorted(self.rule.labels.items()))
        return (f"[{self.state.upper()}] {self.rule.name} ({self.rule.severity}) on "
                f"{self.service}: {what} = {value}, threshold {self.rule.op} "
                f"{self.rule.threshold:g}{labels}")

    def event(self) -> Event:
        return {"v": SCHEMA_VERSION, "kind": "alert", "ts": self.ts, "service": self.service,
                "alert": self.rule.name, "state": self.state, "severity": self.rule.severity,
                "value": self.value, "threshold": self.rule.threshold,
                "labels": self.rule.labels, "summary": self.text(), "pid": os.getpid()}


Action = Callable[[AlertNotice], Awaitable[None]]


@dataclass(slots=True)
class AlertStatus:
    rule: AlertRule
    state: str = INACTIVE
    active_since: float | None = None
    value: float | None = None
    evaluated_at: float | None = None
    error: str | None = None
    # carried on from a predecessor: held as it was until this process has a value of its own
    # (a rate needs two snapshots), so a takeover neither resolves nor re-fires it
    carried_on: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "value": _finite(self.value),
                "active_since": self.active_since, "evaluated_at": self.evaluated_at,
                "severity": self.rule.severity, "error": self.error}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# -- the evaluator ---------------------------------------------------------------------------


class EvaluatorLock:
    """An ``flock`` on a file: held by one process of a group at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        import fcntl

        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("ab")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            return False
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None


class AlertEvaluator:
    def __init__(
        self,
        rules: Sequence[AlertRule],
        *,
        service: str,
        events_dir: str | Path,
        collect: Callable[[], Awaitable[Iterable[Metric]]],
        emit: Callable[[Event], None],
        set_firing: Callable[[str, bool], None],
        actions: Mapping[str, Action] | None = None,
        saved_queries: Mapping[str, str] | None = None,
        interval: float = 15.0,
        lock: EvaluatorLock | None = None,
        state_file: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = list(rules)
        self.service = service
        self.events_dir = Path(events_dir)
        self.statuses = {rule.name: AlertStatus(rule) for rule in self.rules}
        self.interval = interval
        self._collect = collect
        self._emit = emit
        self._set_firing = set_firing
        self._saved = dict(saved_queries or {})
        self._lock = lock
        self._state_file = Path(state_file) if state_file else None
        self._clock = clock
        self._history = MetricHistory(self.rules)
        self._http: Any = None
        self.actions: dict[str, Action] = {"log": self._log, "webhook": self._webhook,
                                           "rollback": self._no_rollback, **(actions or {})}
        self._pending_actions: set[asyncio.Task[None]] = set()
        for rule in self.rules:
            set_firing(rule.name, False)
            unknown = [a for a in rule.actions if a not in self.actions]
            if unknown:
                raise ValueError(f"alert {rule.name!r}: unknown action(s) {unknown}; known: "
                                 f"{', '.join(sorted(self.actions))}")

    # -- one round ---------------------------------------------------------------------------

    async def evaluate(self) -> list[AlertNotice]:
        """Evaluate every rule once; run the actions of those that fired or resolved."""
        now = self._clock()
        if any(rule.is_metric_rule for rule in self.rules):
            self._history.record(now, await self._collect())
        query_rules = [rule for rule in self.rules if not rule.is_metric_rule]
        values: RuleValues = {}
        if query_rules:
            values = await asyncio.to_thread(query_values, query_rules, self.events_dir,
                                             self._saved, now)
        notices = []
        for rule in self.rules:
            status = self.statuses[rule.name]
            if rule.is_metric_rule:
                value, error = self._history.value(rule, now), None
            else:
                value, error = values[rule.name]
            status.value, status.error, status.evaluated_at = value, error, now
            notice = self._step(status, now)
            if notice is not None:
                notices.append(notice)
        for notice in notices:
            self._notify(notice)
        self._write_state()
        return notices

    def _step(self, status: AlertStatus, now: float) -> AlertNotice | None:
        rule = status.rule
        if status.carried_on:
            if status.value is None:
                return None
            status.carried_on = False
        if rule.holds(status.value):
            if status.state == INACTIVE:
                status.state, status.active_since = PENDING, now
            if status.state == PENDING and now - (status.active_since or now) >= rule.for_:
                status.state = FIRING
                return AlertNotice(self.service, rule, "firing", status.value, now)
            return None
        was_firing = status.state == FIRING
        status.state, status.active_since = INACTIVE, None
        if was_firing:
            return AlertNotice(self.service, rule, "resolved", status.value, now)
        return None

    def _notify(self, notice: AlertNotice) -> None:
        self._emit(notice.event())
        self._set_firing(notice.rule.name, notice.state == "firing")
        for name in notice.rule.actions:
            task = asyncio.get_running_loop().create_task(self._act(name, notice))
            self._pending_actions.add(task)
            task.add_done_callback(self._pending_actions.discard)

    async def _act(self, name: str, notice: AlertNotice) -> None:
        try:
            await self.actions[name](notice)
        except Exception:  # an action failing must not stop the evaluator or the others
            log.exception("alert %s: action %s failed", notice.rule.name, name)

    def _write_state(self) -> None:
        """The rules' state for ``buttress alerts list``: written whole, then renamed."""
        if self._state_file is None:
            return
        state = {"service": self.service, "pid": os.getpid(), "written_at": self._clock(),
                 "alerts": {name: s.as_dict() for name, s in self.statuses.items()}}
        partial = self._state_file.with_suffix(".tmp")
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(orjson.dumps(state))
            partial.replace(self._state_file)
        except OSError as error:
            log.warning("cannot write the alert state to %s: %s", self._state_file, error)

    # -- actions -----------------------------------------------------------------------------

    async def _log(self, notice: AlertNotice) -> None:
        level = logging.WARNING if notice.state == "firing" else logging.INFO
        log.log(level, "%s", notice.text())

    async def _webhook(self, notice: AlertNotice) -> None:
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT)
        assert notice.rule.webhook is not None
        body = {"text": notice.text(), "buttress": notice.event()}
        response = await self._http.post(notice.rule.webhook, json=body)
        if response.status_code >= 300:
            log.warning("alert %s: webhook answered %s", notice.rule.name, response.status_code)

    async def _no_rollback(self, notice: AlertNotice) -> None:
        log.warning("alert %s asks for a rollback, but no rollback action is registered "
                    "(Service.alert_action('rollback'))", notice.rule.name)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate every ``interval`` while this process holds the lock (if any)."""
        holding = False
        while True:
            if self._lock is None or self._lock.acquire():
                if not holding and self._lock is not None:
                    self._take_over()
                holding = True
                try:
                    await self.evaluate()
                except Exception:  # keep evaluating: one bad round must not end alerting
                    log.exception("alert evaluation failed")
            await asyncio.sleep(self.interval)

    def _take_over(self) -> None:
        """Carry on from the worker that held the lock before this one, if it did recently.

        Without this a worker taking over (its predecessor exited or was restarted) would
        start every rule from inactive and notify a firing alert a second time.
        """
        state = None if self._state_file is None else read_alert_state(self._state_file)
        if state is None:
            return
        written_at = state.get("written_at")
        if state.get("pid") == os.getpid() or not isinstance(written_at, int | float):
            return
        if self._clock() - written_at > TAKE_OVER_ROUNDS * self.interval + 1.0:
            return  # a previous run's state, not a predecessor's: start afresh
        for name, saved in state["alerts"].items():
            status = self.statuses.get(name)
            if status is None or saved.get("state") not in (PENDING, FIRING):
                continue
            status.state, status.active_since = saved["state"], saved.get("active_since")
            status.carried_on = True
            if status.state == FIRING:
                self._set_firing(name, True)

    async def aclose(self) -> None:
        for task in list(self._pending_actions):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, WEBHOOK_TIMEOUT)
        if self._http is not None:
            await self._http.aclose()
        if self._lock is not None:
            self._lock.release()


def alert_state_file(events_dir: str | Path, service: str) -> Path:
    """Where the evaluator leaves its rules' state for ``buttress alerts list``."""
    return Path(events_dir) / f"alerts-state-{service}.json"


def read_alert_state(path: str | Path) -> dict[str, Any] | None:
    """What an evaluator last wrote to ``path`` (``service``, ``pid``, ``written_at`` and
    ``alerts``: each rule's :meth:`AlertStatus.as_dict`), or None if there is nothing readable:
    whichever worker evaluates, readers see the same state."""
    try:
        state = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("alerts"), dict) else None


def evaluator_for(settings: Settings, metrics: ServiceMetrics, service: str, *,
                  emit: Callable[[Event], None],
                  actions: Mapping[str, Action] | None = None) -> AlertEvaluator:
    """The evaluator of a service's ``[[alerts]]``, reading its metrics and its events."""
    # one evaluator per process group: the worker holding the lock in the shared
    # multiprocess directory (a single process evaluates alone)
    lock = (EvaluatorLock(Path(settings.metrics_dir) / "alerts.lock")
            if multiprocess_enabled() else None)
    return AlertEvaluator(
        settings.alerts, service=service, events_dir=settings.events_dir,
        collect=metrics.collect_off_loop,
        emit=emit, set_firing=metrics.set_alert_firing, actions=actions,
        saved_queries=settings.insights.queries, interval=settings.alerts_interval, lock=lock,
        state_file=alert_state_file(settings.events_dir, service))
