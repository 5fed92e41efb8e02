"""Model stages served from the registry: loaded at start, followed while running.

For every model stage declared with ``bt.FromRegistry(name, alias)``, a runtime

- **at start** enters a registry watcher (its snapshot names the alias's version), loads
  that version (checksum verified, off the event loop) and builds its runner and batcher;
- **when the alias moves** loads the new version, builds a new runner and batcher for it,
  warms them with the service's example, and only then switches the pipeline's
  :class:`~buttress.pipeline.live.ModelSet` in one assignment. Requests in flight finish on
  the set they started with; the old version's batcher is drained and closed once no request
  can still reach it (the longest deadline, ``max_deadline``, plus a margin). A version that
  fails to load (checksum, untrusted types, a broken file) or to warm up is never switched
  to: it is an event (``kind: model``, ``action: refused``), a log line and a count in
  ``buttress_model_loads_refused_total``, and the replica keeps serving what it served
  (a warm-up that was only too slow is tried again at the next heartbeat:
  ``pipeline/warm_up.py``);
- **reports** what it serves (``report_serving``, replica ``hostname:pid``) every
  ``HEARTBEAT`` seconds and after every swap; the same loop retries a swap that could not
  reach the registry or warmed up too slowly (never one that was refused);
- **judges a fresh promotion** by the stage's rollback rules (``bt.RollbackRule``): within
  ``watch_for`` after its watcher saw the promote (its own clock, not the promoter's), once
  both versions have ``min_requests`` counted, a rule
  that sees the new version worse than the one it replaced rolls the registry back
  (``who="auto-rollback"``, ``if_stable=`` the judged version, so of several replicas that
  judged the same promotion only the first moves the alias). Every replica then follows the
  alias back like any other move.

One task per registry follows its watcher; swaps happen one at a time, in order, and a move
that a later one has already overtaken is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from buttress.observability.events import SCHEMA_VERSION
from buttress.pipeline.promotion import EXPIRED, Promotion
from buttress.pipeline.warm_up import SLOW_TRIES, WarmUpProblem, judge
from buttress.registry import ArtifactRefused, FromRegistry, Registry, RegistryError
from buttress.registry.watch import RegistryWatcher

if TYPE_CHECKING:
    from buttress.observability.alerts import AlertNotice
    from buttress.pipeline.live import LiveModel, ModelSet
    from buttress.pipeline.runtime import Runtime
    from buttress.pipeline.stage import StageRuntime
    from buttress.service import AlertAction

log = logging.getLogger("buttress.registry")

HEARTBEAT = 10.0
"""Seconds between two reports of what this replica serves."""
SERVING_TTL = 30.0
"""A report holds this long: a replica that stopped reporting drops out by itself."""
RULE_CHECK_EVERY = 0.5
"""Seconds between two looks at the rollback rules of a fresh promotion."""
RETIRE_MARGIN = 0.5
"""Seconds past ``max_deadline`` before a replaced version's batcher is closed."""
AUTO_ROLLBACK_ACTOR = "auto-rollback"


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RegistryModels:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.replica = replica_id()
        settings = runtime.settings
        metrics = runtime.metrics
        self._followers: list[tuple[Registry, list[StageRuntime]]] = []
        by_url: dict[str, list[StageRuntime]] = {}
        for stage in runtime.pipeline.stages.values():
            if stage.from_registry:
                url = _declared(stage).registry or settings.registry_url
                by_url.setdefault(url, []).append(stage)
        for url, stages in by_url.items():
            registry = Registry(url, models_dir=settings.models_dir,
                                connections=runtime.connections,
                                on_refused=metrics.count_model_refused)
            self._followers.append((registry, stages))
        self._stack = AsyncExitStack()
        self._watchers: list[RegistryWatcher] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._retiring: dict[asyncio.Task[None], LiveModel] = {}
        self._refused: set[tuple[str, str]] = set()
        """(stage, version) pairs refused: never retried."""
        self._slow: dict[tuple[str, str], int] = {}
        """(stage, version) -> warm-ups in a row it was too slow at (retried)."""
        self._promotions: dict[str, Promotion] = {}
        self._swapping = asyncio.Lock()
        """One swap at a time: the watcher's and the heartbeat's catch-up never race."""

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Watch first (a move after the snapshot is not lost), then load what it names."""
        pipeline = self.runtime.pipeline
        loaded: dict[str, LiveModel] = {}
        for registry, stages in self._followers:
            self._stack.push_async_callback(registry.aclose)
            watcher = await self._stack.enter_async_context(
                registry.watch(sorted({_declared(s).name for s in stages})))
            self._watchers.append(watcher)
            for stage in stages:
                declared = _declared(stage)
                version = (watcher.pointers.get((declared.name, declared.alias))
                           or (await registry.resolve(declared.name, declared.alias)).version)
                model = await registry.load(declared.name, version=version,
                                            allow_pickle=declared.allow_pickle,
                                            trusted_types=declared.trusted_types)
                loaded[stage.spec.name] = stage.build_live(model.model, model.version)
        pipeline.switch(pipeline.model_set({**pipeline.models.live, **loaded}))

    def follow(self) -> None:
        """Start following (after the warm-up): watchers, heartbeat, rules."""
        loop = asyncio.get_running_loop()
        for (registry, stages), watcher in zip(self._followers, self._watchers, strict=True):
            self._tasks.append(loop.create_task(self._follow(registry, stages, watcher),
                                                name="registry-follow"))
        self._tasks.append(loop.create_task(self._heartbeat(), name="registry-heartbeat"))
        if self.runtime.pipeline.rollback_rules:
            self._tasks.append(loop.create_task(self._judge_promotions(),
                                                name="rollback-rules"))

    async def aclose(self) -> None:
        for task in [*self._tasks, *self._retiring]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for live in self._retiring.values():
            await live.aclose()
        self._tasks.clear()
        self._retiring.clear()
        await self._stack.aclose()

    # -- following the alias ---------------------------------------------------------------

    async def _follow(self, registry: Registry, stages: list[StageRuntime],
                      watcher: RegistryWatcher) -> None:
        async for moved in watcher:
            for stage in stages:
                declared = _declared(stage)
                key = (declared.name, declared.alias)
                if (moved.name, moved.alias) != key or moved.version is None:
                    continue
                if watcher.pointers.get(key) != moved.version:
                    continue  # overtaken by a later move: go straight there
                await self.swap(registry, stage, moved.version)

    async def swap(self, registry: Registry, stage: StageRuntime, version: str) -> bool:
        """Serve ``version`` in ``stage`` if it loads and warms up; whether it does now."""
        async with self._swapping:
            return await self._swap(registry, stage, version)

    async def _swap(self, registry: Registry, stage: StageRuntime, version: str) -> bool:
        if stage.version == version:
            return True
        if (stage.spec.name, version) in self._refused:
            return False
        declared = _declared(stage)
        clock = time.perf_counter()
        try:
            loaded = await registry.load(declared.name, version=version,
                                         allow_pickle=declared.allow_pickle,
                                         trusted_types=declared.trusted_types)
            live = stage.build_live(loaded.model, version, mirrored=False)
        except ArtifactRefused as refused:  # counted by the registry's on_refused hook
            return self._refuse(stage, version, refused.reason, str(refused))
        except RegistryError as error:  # unreachable: the heartbeat retries
            log.warning("model %s: cannot load %s yet: %s", declared.name, version, error)
            return False
        except Exception as error:  # a file that does not build: a broken version
            self.runtime.metrics.count_model_refused(declared.name, "broken")
            log.exception("model %s: version %s does not load", declared.name, version)
            return self._refuse(stage, version, "broken", f"{type(error).__name__}: {error}")
        pipeline = self.runtime.pipeline
        candidate = pipeline.models.replaced(stage.spec.name, live)
        try:
            problem = await self._warm_up(stage, candidate)
        except BaseException:  # stopping mid-swap: its threads must not outlive the server
            await live.aclose()
            raise
        if problem is not None:
            await live.aclose()
            return self._not_warmed(stage, version, problem)
        # "in a row": a version that warmed up ends every count of this stage's slow ones
        self._slow = {key: n for key, n in self._slow.items() if key[0] != stage.spec.name}
        stage.reset_breaker(live)  # warm-up failures, if any, were the candidate's: and now
        # its breaker shows in buttress_breaker_open (a refused one never did)
        previous = pipeline.switch(pipeline.model_set(candidate.live))
        old = previous.live[stage.spec.name]
        self._retire(old)
        seconds = time.perf_counter() - clock
        log.info("model %s: now serving %s (was %s), loaded and warmed in %.2fs",
                 declared.name, version, old.version, seconds)
        self._emit(stage, "swap", version, old.version, seconds=round(seconds, 3))
        await self._watch_if_promoted(registry, stage, version, old.version, previous)
        await self._report(registry, stage)
        return True

    async def _warm_up(self, stage: StageRuntime,
                       candidate: ModelSet) -> WarmUpProblem | None:
        """None if the candidate's model answered the example; else what went wrong."""
        if self.runtime.service.example is None:
            return None
        return judge(await self.runtime.warm_up_models(candidate), stage.spec.name)

    def _not_warmed(self, stage: StageRuntime, version: str, problem: WarmUpProblem) -> bool:
        """A slow warm-up is tried again at the next heartbeat (``pipeline/warm_up.py``);
        a broken one, or one slow :data:`SLOW_TRIES` times in a row, is refused."""
        key = (stage.spec.name, version)
        tries = self._slow.get(key, 0) + 1
        if problem.slow and tries < SLOW_TRIES:
            self._slow[key] = tries
            log.warning("model %s: %s too slow at warm-up (try %d of %d), again in %.0fs: %s",
                        _declared(stage).name, version, tries, SLOW_TRIES, HEARTBEAT,
                        problem.detail)
            self._emit(stage, "deferred", version, stage.version, reason="warm_up_slow",
                       detail=problem.detail, tries=tries)
            return False
        self._slow.pop(key, None)
        self.runtime.metrics.count_model_refused(_declared(stage).name, "warm_up")
        return self._refuse(stage, version, "warm_up", problem.detail)

    def _refuse(self, stage: StageRuntime, version: str, reason: str, detail: str) -> bool:
        self._refused.add((stage.spec.name, version))
        log.error("model %s: not switching to %s (%s): %s", _declared(stage).name, version,
                  reason, detail)
        self._emit(stage, "refused", version, stage.version, reason=reason, detail=detail)
        return False

    def _retire(self, live: LiveModel) -> None:
        """Close a replaced version once no request can still reach its batcher."""
        grace = self.runtime.settings.max_deadline + RETIRE_MARGIN

        async def retire() -> None:
            await asyncio.sleep(grace)
            await live.aclose()

        task = asyncio.get_running_loop().create_task(retire(), name="model-retire")
        self._retiring[task] = live
        task.add_done_callback(self._retiring.pop)

    # -- reporting -------------------------------------------------------------------------

    async def _report(self, registry: Registry, stage: StageRuntime) -> None:
        try:
            await registry.report_serving(self.replica, _declared(stage).name, stage.version,
                                          ttl=SERVING_TTL)
        except RegistryError as error:
            log.warning("model %s: cannot report what is served: %s", stage.spec.name, error)

    async def _heartbeat(self) -> None:
        """Report what is served; catch up with an alias a failed swap left behind."""
        while True:
            for (registry, stages), watcher in zip(self._followers, self._watchers,
                                                   strict=True):
                for stage in stages:
                    declared = _declared(stage)
                    wanted = watcher.pointers.get((declared.name, declared.alias))
                    if wanted is not None and wanted != stage.version:
                        await self.swap(registry, stage, wanted)
                    await self._report(registry, stage)
            await asyncio.sleep(HEARTBEAT)

    # -- automatic rollback ----------------------------------------------------------------

    async def _watch_if_promoted(self, registry: Registry, stage: StageRuntime, version: str,
                                 previous_version: str, previous: ModelSet) -> None:
        """Watch the new version by the stage's rules if a promotion brought it (not a
        rollback, not a replica catching up long after)."""
        self._promotions.pop(stage.spec.name, None)
        if not stage.spec.rollback:
            return
        try:
            last = (await registry.history(_declared(stage).name, limit=1))[:1]
        except RegistryError:
            return
        if not last or last[0].action != "promote" or last[0].to_version != version:
            return
        now = self.runtime.pipeline.models
        if now.tally is None or previous.tally is None:
            return
        self._promotions[stage.spec.name] = Promotion(
            stage, registry, version, previous_version, now.tally, previous.tally,
            self._heard(registry, stage))

    def _heard(self, registry: Registry, stage: StageRuntime) -> float:
        """When this replica's watcher saw the alias move (``time.monotonic()``): the watch's
        start on this replica's own clock. The history's ``at`` is the promoter's clock, which
        may be minutes off this one's (it once cancelled or stretched the whole watch)."""
        declared = _declared(stage)
        for (known, _stages), watcher in zip(self._followers, self._watchers, strict=True):
            if known is registry:
                return watcher.heard.get((declared.name, declared.alias), time.monotonic())
        return time.monotonic()

    async def _judge_promotions(self) -> None:
        while True:
            await asyncio.sleep(RULE_CHECK_EVERY)
            now = time.monotonic()
            for name, promotion in list(self._promotions.items()):
                verdict = promotion.verdict(now)
                if verdict is None:
                    continue
                del self._promotions[name]
                if verdict is not EXPIRED:
                    rule, new, old = verdict
                    await self._roll_back(promotion.registry, promotion.stage,
                                          promotion.version, rule.name, rule.describe(new, old),
                                          value=new, baseline=old)

    def alert_actions(self) -> dict[str, AlertAction]:
        """The alert rules' ``rollback`` action, for the runtime's alert evaluator."""
        return {"rollback": self._alert_rollback}

    async def _alert_rollback(self, notice: AlertNotice) -> None:
        """An alert rule with ``actions = ["rollback"]`` that starts firing rolls back the
        registry model its ``labels.model`` names (every registry model without it). The
        evaluator runs in one process of a machine (its lock); ``if_stable`` keeps replicas
        on other machines from stepping back twice."""
        if notice.state != "firing":
            return
        wanted = notice.rule.labels.get("model")
        for registry, stages in self._followers:
            for stage in stages:
                if wanted in (None, _declared(stage).name, stage.spec.name):
                    await self._roll_back(registry, stage, stage.version, notice.rule.name,
                                          f"alert {notice.text()}", value=notice.value)

    async def _roll_back(self, registry: Registry, stage: StageRuntime, version: str,
                         rule: str, why: str, **fields: Any) -> None:
        """Roll ``stage``'s model back from ``version``, unless it moved on already."""
        name = _declared(stage).name
        try:
            change = await registry.rollback(name, who=AUTO_ROLLBACK_ACTOR, why=why,
                                             if_stable=version)
        except RegistryError as error:
            log.error("model %s: %s fired but the rollback failed: %s", name, rule, error)
            self._emit(stage, "auto_rollback_failed", None, version, rule=rule, reason=why,
                       detail=str(error))
            return
        if change is None:
            log.info("model %s: %s fired; %s was already rolled back", name, rule, version)
        else:
            self.runtime.metrics.count_model_change(name, "auto_rollback")
            log.warning("model %s: rolled %s back to %s: %s", name, change.from_version,
                        change.to_version, why)
        self._emit(stage, "auto_rollback", change.to_version if change else None, version,
                   rule=rule, reason=why, issued=change is not None, **fields)

    # -- events ----------------------------------------------------------------------------

    def _emit(self, stage: StageRuntime, action: str, version: str | None,
              previous_version: str | None, **fields: Any) -> None:
        self.runtime.events.emit({
            "v": SCHEMA_VERSION, "kind": "model", "ts": time.time(),
            "service": self.runtime.service.name, "model": _declared(stage).name,
            "stage": stage.spec.name, "action": action, "version": version,
            "previous_version": previous_version, "replica": self.replica,
            "pid": os.getpid(), **fields})


def _declared(stage: StageRuntime) -> FromRegistry:
    declared = stage.spec.model
    assert isinstance(declared, FromRegistry)
    return declared
