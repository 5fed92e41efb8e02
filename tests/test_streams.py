"""``buttress.streams`` against the machine's Redis and NATS JetStream, in one process: the
answers in the ``/predict`` contract, dead letters, lag, in-flight bound, group sharing,
reclaiming a dead consumer's messages and a graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest

from buttress.config import Settings
from buttress.pipeline.runtime import Runtime
from buttress.streams import (
    Lag,
    StreamConsumer,
    open_sink,
    open_source,
    parse_stream_url,
)
from buttress.streams.metrics import StreamMetrics
from buttress.streams.urls import StreamURLError
from tests.services.stream_scorer import svc
from tests.streams import BROKERS, Broker, order
from tests.support import started

pytestmark = pytest.mark.redis

@pytest.fixture(params=BROKERS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    opened = await Broker(request.param).open()
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(events_dir=str(tmp_path / "events"), deadline=2.0, max_deadline=2.0,
                        max_concurrency="off")
    async with started(svc, settings) as built:
        yield built


@asynccontextmanager
async def consuming(runtime: Runtime, broker: Broker, *, max_in_flight: int = 64,
                    metrics: StreamMetrics | None = None,
                    **options: str) -> AsyncIterator[StreamConsumer]:
    """A consumer running in the background; stopped (gracefully) at the end."""
    source = await open_source(broker.source_url(**options))
    sink_url = parse_stream_url(broker.sink_url)
    sink, dead = await open_sink(sink_url), await open_sink(sink_url.dead_letters())
    consumer = StreamConsumer(runtime, source, sink, dead, max_in_flight=max_in_flight,
                              fetch_wait=0.2, lag_interval=0.1, metrics=metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield consumer
    finally:
        stop.set()
        async with asyncio.timeout(30):  # a graceful stop that never ends is a failure, not a hang
            await task
        for closing in (source, sink, dead):
            await closing.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    """Poll ``check`` (the brokers have no change notification a test could await)."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 -- polling an external broker
            await asyncio.sleep(0.05)


def test_stream_urls_name_broker_stream_and_group() -> None:
    url = parse_stream_url("redis-stream://10.0.0.1:6380/2/orders?group=scorers&consumer=c1")
    assert (url.host, url.port, url.db, url.stream, url.group, url.consumer) == (
        "10.0.0.1", 6380, 2, "orders", "scorers", "c1")
    assert url.dead_letters().stream == "orders-dead-letters"
    nats = parse_stream_url("nats://127.0.0.1:4222/ORDERS/orders.new?durable=scorers")
    assert (nats.stream, nats.subject, nats.group) == ("ORDERS", "orders.new", "scorers")
    assert (nats.dead_letters().stream, nats.dead_letters().subject) == (
        "ORDERS_DEAD_LETTERS", "orders.new.dead-letters")
    with pytest.raises(StreamURLError, match="redis-stream://, nats://"):
        parse_stream_url("kafka://127.0.0.1:9092/orders")
    with pytest.raises(StreamURLError, match="DB/STREAM"):
        parse_stream_url("redis-stream://127.0.0.1:6379/orders")


def test_the_urls_in_the_streams_page_parse() -> None:
    import re

    page = (Path(__file__).resolve().parents[1] / "docs" / "streams.md").read_text()
    urls = re.findall(r'"((?:redis-stream|nats)://[^"\s`]+)"', page)
    assert len(urls) >= 2
    for url in urls:
        assert parse_stream_url(url).stream


async def test_every_message_is_answered_in_the_predict_contract(
        runtime: Runtime, broker: Broker) -> None:
    bodies = [order(i) for i in range(60)]
    invalid = [b'{"id": "no-x"}', b"not json", b'{"id": "o", "x": "many"}']
    await broker.produce(bodies[:30] + invalid + bodies[30:])
    async with consuming(runtime, broker) as consumer:
        async def all_in() -> bool:
            return len(await broker.answers()) + len(await broker.dead_letters()) == 63
        await eventually(all_in)
    answers = await broker.answers()
    assert sorted(a.body["id"] for a in answers) == sorted(f"o{i}" for i in range(60))
    direct = {}
    for body in bodies:  # what /predict answers for the same body
        answer = await runtime.answer(body, request_id="direct")
        direct[orjson.loads(body)["id"]] = (answer.status, orjson.loads(answer.body))
    assert all((a.status, a.body) == direct[a.body["id"]] for a in answers)
    assert len({a.request_id for a in answers}) == 60  # keyed by request id, one each
    dead = await broker.dead_letters()
    assert sorted(d.status for d in dead) == [400, 422, 422]
    assert all(d.body["error"]["category"] == "input_invalid" for d in dead)
    # each with the error body /predict returns for it
    assert {(await runtime.answer(b, request_id="d")).body for b in invalid} == {
        orjson.dumps(d.body) for d in dead}
    registry = runtime.metrics.registry
    labels = {"service": "stream-scorer", "stream": consumer.source.stream,
              "group": "scorers"}
    assert registry.get_sample_value("buttress_stream_messages_total",
                                     {**labels, "outcome": "answered"}) == 60
    assert registry.get_sample_value("buttress_stream_messages_total",
                                     {**labels, "outcome": "dead_lettered"}) == 3


async def test_lag_is_what_the_group_has_not_acknowledged_and_falls_to_zero(
        runtime: Runtime, broker: Broker) -> None:
    await broker.produce([order(i, sleep_ms=100) for i in range(24)])
    await asyncio.sleep(0.05)
    source = await open_source(broker.source_url())
    try:
        before = await source.lag()
        assert before.behind == 24
        assert before.pending == 0
        assert before.oldest_age_s > 0.0
        seen: list[float] = []
        async with consuming(runtime, broker, max_in_flight=4) as consumer:
            labels = {"service": "stream-scorer", "stream": source.stream, "group": "scorers"}

            async def caught_up() -> bool:
                value = runtime.metrics.registry.get_sample_value(
                    "buttress_stream_lag_messages", labels)
                if value is not None:
                    seen.append(value)
                return consumer.last_lag == Lag(0, 0, 0.0) and value == 0
            await eventually(caught_up)
        assert max(seen) > 0  # it was seen behind, then caught up
        assert await source.lag() == Lag(0, 0, 0.0)
    finally:
        await source.aclose()


async def test_in_flight_messages_are_bounded(runtime: Runtime, broker: Broker) -> None:
    await broker.produce([order(i, sleep_ms=20) for i in range(40)])
    most = 0
    async with consuming(runtime, broker, max_in_flight=5) as consumer:
        async def done() -> bool:
            nonlocal most
            most = max(most, consumer.in_flight)
            return len(await broker.answers()) == 40
        await eventually(done)
    assert 0 < most <= 5


async def test_two_consumers_in_a_group_share_the_stream(
        runtime: Runtime, broker: Broker) -> None:
    await broker.produce([order(i, sleep_ms=20) for i in range(80)])
    async with consuming(runtime, broker, max_in_flight=4, consumer="c1") as first, \
            consuming(runtime, broker, max_in_flight=4, consumer="c2",
                      metrics=first.metrics) as second:
        async def done() -> bool:
            return len(await broker.answers()) >= 80
        await eventually(done, within=30)
    answered = [c.counts["answered"] for c in (first, second)]
    assert sum(answered) == 80
    assert min(answered) > 0  # both took part
    assert len({a.request_id for a in await broker.answers()}) == 80


async def test_a_dead_consumers_pending_messages_are_claimed_by_another(
        runtime: Runtime) -> None:
    broker = await Broker("redis").open()
    try:
        await broker.produce([order(i) for i in range(10)])
        dead = await open_source(broker.source_url(consumer="dies"))
        taken = await dead.fetch(6, 0.1)  # delivered to it, never acknowledged
        assert len(taken) == 6
        await dead.aclose()
        async with consuming(runtime, broker, consumer="lives", claim_idle="300ms"):
            async def all_in() -> bool:
                return len(await broker.answers()) == 10
            await eventually(all_in)
        ids = {a.request_id for a in await broker.answers()}
        assert {m.request_id for m in taken} <= ids
    finally:
        await broker.aclose()


async def test_a_graceful_stop_answers_and_acknowledges_what_is_in_flight(
        runtime: Runtime, broker: Broker) -> None:
    await broker.produce([order(i, sleep_ms=300) for i in range(8)])
    async with consuming(runtime, broker, max_in_flight=8) as consumer:
        await eventually(lambda: _true(consumer.in_flight > 0))
    # stopped with messages in the model: they were written and acknowledged all the same
    answered = await broker.answers()
    source = await open_source(broker.source_url())
    try:
        lag = await source.lag()
    finally:
        await source.aclose()
    assert lag.pending == 0
    assert lag.behind == 8 - len(answered)
    assert len(answered) >= 1


async def _true(value: bool) -> bool:
    return value
