"""Serve a message stream through a runtime: each message one request, each answer one
message on the sink.

- Each message is answered by :meth:`Runtime.answer`, exactly as ``/predict`` answers a body:
  same input contract, stages, fallbacks, caches, guardrails, batching, event and metrics.
- A batch from the source is answered concurrently (so the service's batcher forms model
  batches from it), then written to the sink in one call, then acknowledged: at least once.
- An answer in the 4xx range (the input contract refused it) goes to the dead-letter sink
  with the error body ``/predict`` would return, and is acknowledged: it never blocks the
  stream. Every other answer, 5xx included, goes to the sink with its status.
- At most ``max_in_flight`` messages are being answered at once: the consumer fetches only
  as many as it has room for (back-pressure; memory stays bounded).
- A write or ack that fails is retried a few times; after that the messages stay unacknowledged
  and the broker delivers them again (Redis: ``XAUTOCLAIM`` after ``claim_idle``; JetStream:
  after ``ack_wait``).
- ``stop`` set: no more fetches; batches in flight are finished, written and acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from buttress.resilience.deadline import InvalidDeadline
from buttress.streams.metrics import StreamMetrics
from buttress.streams.types import Lag, Message, Record, Sink, Source

if TYPE_CHECKING:
    from buttress.pipeline.runtime import Answer, Runtime

log = logging.getLogger("buttress.streams")

WRITE_ATTEMPTS = 3


class StreamConsumer:
    def __init__(self, runtime: Runtime, source: Source, sink: Sink, dead_letters: Sink, *,
                 max_in_flight: int = 64, fetch_wait: float = 0.5,
                 lag_interval: float = 1.0, metrics: StreamMetrics | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.runtime = runtime
        self.source = source
        self.sink = sink
        self.dead_letters = dead_letters
        self.max_in_flight = max_in_flight
        self.fetch_wait = fetch_wait
        self.lag_interval = lag_interval
        self.metrics = metrics or StreamMetrics(runtime.metrics.registry, runtime.service.name,
                                                source.stream, source.group)
        self.counts = {"answered": 0, "dead_lettered": 0}
        """What this consumer itself answered (the metrics add up every consumer)."""
        self.route = f"stream:{source.stream}"
        self.in_flight = 0
        self.last_lag: Lag | None = None
        self.running = False

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish what is in flight."""
        self.running = True
        watcher = asyncio.create_task(self._watch_lag(stop), name="stream-lag")
        batches: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                room = self.max_in_flight - self.in_flight
                if room <= 0:
                    await asyncio.wait(batches, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await self.source.fetch(room, self.fetch_wait)
                except Exception as error:  # the broker is away or slow: retry, in one line
                    log.warning("fetching from %s failed (%s: %s); retrying in 1 s",
                                self.source.stream, type(error).__name__, error)
                    self.metrics.errors["fetch"].inc()
                    await _sleep_unless(stop, 1.0)
                    continue
                if messages:
                    self._moved(len(messages))
                    task = asyncio.create_task(self._serve(messages))
                    batches.add(task)
                    task.add_done_callback(batches.discard)
        finally:
            self.running = False
            if batches:
                await asyncio.wait(batches)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def _moved(self, n: int) -> None:
        self.in_flight += n
        self.metrics.in_flight.set(self.in_flight)

    async def _serve(self, messages: list[Message]) -> None:
        try:
            answers = await asyncio.gather(*(self._answer(m) for m in messages))
            records, dead = [], []
            for message, answer in zip(messages, answers, strict=True):
                if 400 <= answer.status < 500:
                    dead.append(Record(message.request_id, answer.status, answer.body,
                                       message.position, request=message.body))
                else:
                    records.append(Record(message.request_id, answer.status, answer.body,
                                          message.position))
            if await self._deliver(messages, records, dead):
                for outcome, n in (("answered", len(records)), ("dead_lettered", len(dead))):
                    self.metrics.messages[outcome].inc(n)
                    self.counts[outcome] += n
        finally:
            self._moved(-len(messages))

    async def _answer(self, message: Message) -> Answer:
        runtime = self.runtime
        limit = runtime.settings.max_body_bytes
        if len(message.body) > limit:
            return runtime.reject(413, f"body larger than {limit} bytes", message.request_id,
                                  self.route)
        try:
            budget = runtime.deadline_for(message.deadline_ms)
        except InvalidDeadline as invalid:
            return runtime.reject(400, str(invalid), message.request_id, self.route)
        return await runtime.answer(message.body, request_id=message.request_id,
                                    deadline_s=budget, route=self.route)

    async def _deliver(self, messages: list[Message], records: list[Record],
                       dead: list[Record]) -> bool:
        """Write, then acknowledge; False if it kept failing (the broker redelivers)."""
        pending = [(sink, batch) for sink, batch in ((self.sink, records),
                                                      (self.dead_letters, dead)) if batch]
        for attempt in range(WRITE_ATTEMPTS):
            operation = "write"
            try:
                while pending:  # each sink is written once, even if a later step fails
                    sink, batch = pending[0]
                    await sink.write(batch)
                    pending.pop(0)
                operation = "ack"
                await self.source.ack(messages)
                return True
            except Exception:
                self.metrics.errors[operation].inc()
                log.warning("%s of %d messages from %s failed (attempt %d of %d)", operation,
                            len(messages), self.source.stream, attempt + 1, WRITE_ATTEMPTS,
                            exc_info=True)
                await asyncio.sleep(0.5 * 2 ** attempt)
        return False

    async def _watch_lag(self, stop: asyncio.Event) -> None:
        while True:
            try:
                self.last_lag = await self.source.lag()
                self.metrics.set_lag(self.last_lag)
            except Exception:
                self.metrics.errors["lag"].inc()
                log.warning("reading the lag of %s failed", self.source.stream, exc_info=True)
            await asyncio.sleep(self.lag_interval)  # cancelled once in-flight work is done


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
