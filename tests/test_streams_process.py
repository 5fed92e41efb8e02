"""``buttress consume`` as a process: killed with SIGKILL mid-batch, every message is still
answered after a restart; SIGTERM drains; ``/metrics`` shows the lag rise and fall."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from buttress.streams import open_source
from tests.servers import REPO, clean_environment, cli_command, metric_value
from tests.streams import BROKERS, Broker, order
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis]

SCORER = f"{REPO / 'tests/services/stream_scorer.py'}:svc"
IN_FLIGHT = 16


@pytest.fixture(params=BROKERS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    opened = await Broker(request.param).open()
    try:
        yield opened
    finally:
        await opened.aclose()


@contextmanager
def consumer_process(broker: Broker, workdir: Path, source_url: str,
                     ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``buttress consume`` on the scorer, ready (its /readyz answered 200)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (workdir / "consume.log").open("ab") as log:
        process = subprocess.Popen(
            cli_command("consume", SCORER, "--source", source_url, "--sink", broker.sink_url,
                        "--port", str(port), "--max-in-flight", str(IN_FLIGHT)),
            cwd=workdir, env=clean_environment(workdir), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, base, workdir)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(process: subprocess.Popen[bytes], base: str, workdir: Path) -> None:
    from buttress.cli.server import wait_until_ready

    try:
        wait_until_ready(base, 60, alive=lambda: process.poll() is None)
    except (RuntimeError, TimeoutError) as error:
        raise AssertionError(f"{error}\n{(workdir / 'consume.log').read_text()}") from None


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 -- polling an external broker
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("restart_as", ["same-consumer", "new-consumer"])
async def test_a_consumer_killed_mid_batch_loses_no_message(
        broker: Broker, tmp_path: Path, restart_as: str) -> None:
    n = 120
    await broker.produce([order(i, sleep_ms=150) for i in range(n)])
    first = broker.source_url(consumer="c1", ack_wait="2s", claim_idle="2s")
    again = first if restart_as == "same-consumer" else broker.source_url(
        consumer="c2", ack_wait="2s", claim_idle="2s")
    with consumer_process(broker, tmp_path / "first", first) as (process, _):
        async def some_answered() -> bool:
            return len(await broker.answers()) >= IN_FLIGHT
        await wait_for(some_answered)
        process.send_signal(signal.SIGKILL)  # with a batch in the model, unacknowledged
        process.wait(timeout=10)
    assert len(await broker.answers()) < n
    source = await open_source(first)
    try:
        assert (await source.lag()).pending > 0  # it died holding delivered messages
    finally:
        await source.aclose()
    with consumer_process(broker, tmp_path / "again", again):
        async def all_answered() -> bool:
            return {a.request_id for a in await broker.answers()} >= set(ids)
        ids = await _request_ids(broker, n)
        await wait_for(all_answered, within=90)
    answers = await broker.answers()
    assert {a.body["id"] for a in answers} == {f"o{i}" for i in range(n)}
    assert all(a.status == 200 for a in answers)
    # duplicates only for what was in flight when it died, each keyed by its request id
    assert len(answers) - n <= IN_FLIGHT


async def _request_ids(broker: Broker, n: int) -> list[str]:
    """The request ids the consumer derives for the n messages (their positions)."""
    if broker.kind == "redis":
        entries = await broker.client.xrange(f"{broker.name}-in")
        return [f"{broker.name}-in:{e[0].decode()}" for e in entries]
    return [f"{broker.name.upper()}_IN:{seq}" for seq in range(1, n + 1)]


async def test_sigterm_finishes_and_acknowledges_what_is_in_flight(
        broker: Broker, tmp_path: Path) -> None:
    await broker.produce([order(i, sleep_ms=200) for i in range(40)])
    with consumer_process(broker, tmp_path, broker.source_url()) as (process, _):
        async def started() -> bool:
            return len(await broker.answers()) > 0
        await wait_for(started)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    source = await open_source(broker.source_url())
    try:
        lag = await source.lag()
    finally:
        await source.aclose()
    assert lag.pending == 0  # nothing left delivered-but-unanswered
    assert lag.behind == 40 - len(await broker.answers())


async def test_metrics_show_the_lag_rise_while_stopped_and_fall_to_zero(
        broker: Broker, tmp_path: Path) -> None:
    source = await open_source(broker.source_url())  # the group exists before the producer
    try:
        await broker.produce([order(i, sleep_ms=40) for i in range(60)])
        await asyncio.sleep(0.05)  # an age is in whole milliseconds: let the oldest have one
        stopped = await source.lag()
        assert stopped.behind == 60
        assert stopped.oldest_age_s > 0
        seen: list[float] = []
        with consumer_process(broker, tmp_path, broker.source_url()) as (_, base):
            labels = {"stream": source.stream, "group": "scorers"}

            async def caught_up() -> bool:
                async with httpx.AsyncClient() as client:
                    text = (await client.get(f"{base}/metrics", timeout=5)).text
                seen.append(metric_value(text, "buttress_stream_lag_messages", **labels))
                answered = metric_value(text, "buttress_stream_messages_total",
                                        outcome="answered", **labels)
                return answered == 60 and seen[-1] == 0
            await wait_for(caught_up)
        assert max(seen) > 0
        assert (await source.lag()).behind == 0
    finally:
        await source.aclose()


async def test_two_consumer_processes_in_one_group_split_the_stream(
        broker: Broker, tmp_path: Path) -> None:
    with consumer_process(broker, tmp_path / "c1", broker.source_url(consumer="c1")) as (
            _, first), \
            consumer_process(broker, tmp_path / "c2", broker.source_url(consumer="c2")) as (
            _, second):
        await broker.produce([order(i, sleep_ms=20) for i in range(200)])  # both are ready

        async def all_answered() -> bool:
            return len({a.request_id for a in await broker.answers()}) == 200
        await wait_for(all_answered)
        async with httpx.AsyncClient() as client:
            counts = [metric_value((await client.get(f"{base}/metrics")).text,
                                   "buttress_stream_messages_total", outcome="answered")
                      for base in (first, second)]
    assert sum(counts) >= 200
    assert min(counts) > 0  # both took part, with no coordination of ours
