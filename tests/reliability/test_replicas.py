"""Replicas: guardrails exact across processes whose clocks disagree, caches that never answer
with another model version's prediction, and a rollback under load reaching every replica.

Guardrails and clocks: the admission script reads the Redis server's ``TIME``
(``guardrails/lua.py``, ``ADMIT``: ``redis.call('TIME')`` unless a test passes a clock, which
``RedisStore`` does only when ``Guardrails(clock=...)`` is given, and the pipeline never gives
one, ``pipeline/engine.py``). So two replicas whose wall clocks are 4 s apart (-2 s and +2 s,
``skewed_clock.py``) count in the same windows. The test fires claims at both replicas at once
around window edges (by the Redis clock) and reads what was admitted from a recorder guardrail's
log, stamped by the script itself (``edge_service.py``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio

from bench.harness import varied_orders
from buttress.backends import Connections
from buttress.demo.service import EXAMPLE
from buttress.guardrails import Guardrails, SlidingWindow
from buttress.registry import Registry
from tests.reliability.edge_service import FIXED, RECORDER, SLIDING
from tests.reliability.replica_support import (
    Burst,
    Claim,
    per_window,
    recorded,
    skewed_server,
)
from tests.reliability.soak_load import Answer, lift_demo_guardrails, paced_load
from tests.servers import DEMO, REPO, RunningServer, clean_environment, cli_command, running_server
from tests.services.registry_model import linear_file
from tests.support import PrivateRedis, delete_namespaces, unique_prefix
from tests.test_guardrails_concurrency import Log

EDGE_TARGET = f"{REPO / 'tests/reliability/edge_service.py'}:svc"
OFFSETS = (-2.0, 2.0)
LIMIT = 10
UNITS = 1_000_000  # a claim costs one request: 1,000,000 millionths
WINDOW_US = 1_000_000
EDGES = 3
ROUNDS = 3
FIXED_BURSTS = (-0.3, -0.02, 0.02, 0.3)
"""Seconds from a fixed window's edge at which both replicas get LIMIT claims each."""


async def fixed_edges(burst: Burst) -> list[int]:
    """Around EDGES window edges (whole seconds of the Redis clock, two apart): 2 x LIMIT claims
    300 ms and 20 ms before each edge and 20 ms and 300 ms after it."""
    edges: list[int] = []
    for _ in range(EDGES):
        now = await burst.redis_now()
        edge = max(math.ceil(now + 0.5), edges[-1] + 2 if edges else 0)
        await asyncio.gather(*(burst.at(edge + offset, "fixed", LIMIT)
                               for offset in FIXED_BURSTS))
        edges.append(edge)
    return edges


async def sliding_rounds(burst: Burst, client: redis.asyncio.Redis,
                         namespace: str) -> list[tuple[float, float]]:
    """ROUNDS times, from an empty window: 2 x LIMIT claims; then as many 20 ms before the
    first admission leaves the window, 20 ms after the last one left, and 300 ms after that.
    The rounds' ``(first, last)`` admission times of their first burst, by the Redis clock."""
    rounds = []
    for _ in range(ROUNDS):
        start = await burst.redis_now()
        await burst.at(start + 0.05, "sliding", LIMIT)
        stamps = [at for at, _ in await recorded(client, namespace, RECORDER, "sliding")
                  if at >= start * 1e6]
        first, last = stamps[0] / 1e6, stamps[-1] / 1e6
        await asyncio.gather(burst.at(first + 1 - 0.02, "sliding", LIMIT),
                             burst.at(last + 1 + 0.02, "sliding", LIMIT),
                             burst.at(last + 1 + 0.3, "sliding", LIMIT))
        rounds.append((first, last))
        ends = max(at for at, _ in await recorded(client, namespace, RECORDER, "sliding"))
        await asyncio.sleep(max(0.0, ends / 1e6 + 1.1 - await burst.redis_now()))
    return rounds


def check_skew(server: RunningServer, offset: float, claims: list[Claim]) -> None:
    """Each replica's events are stamped with its own skewed clock: the clock really was off."""
    stamped = {e["request_id"]: e["ts"] for e in server.events()}
    for claim in claims:
        assert claim.before - 0.01 <= stamped[claim.request_id] - offset <= claim.after + 0.01


def check_fixed(entries: list[tuple[int, int]], edges: list[int],
                claims: list[Claim]) -> list[float]:
    """The checks; returns the ms from each edge to the first admission after it."""
    fill = per_window(entries, WINDOW_US)
    firsts = []
    assert max(fill.values()) <= LIMIT * UNITS, fill  # never over, in any window
    for edge in edges:  # both windows around every edge filled exactly
        assert (fill.get(edge - 1), fill.get(edge)) == (LIMIT * UNITS, LIMIT * UNITS), fill
        first_after = min(at for at, _ in entries if at >= edge * WINDOW_US)
        assert first_after - edge * WINDOW_US < 250_000  # the +20 ms burst got in
        firsts.append((first_after - edge * WINDOW_US) / 1000)
    for claim in claims:  # no needless refusal: a refusal placed in a window found it full
        if not claim.admitted and int(claim.before) == int(claim.after):
            assert fill[int(claim.before)] == LIMIT * UNITS
    return firsts


def check_sliding(entries: list[tuple[int, int]], rounds: list[tuple[float, float]],
                  claims: list[Claim]) -> None:
    log = Log(entries)
    assert log.busiest(WINDOW_US) <= LIMIT * UNITS  # no interval of 1 s holds more
    for first, last in rounds:  # each round filled its window exactly, and again across
        in_round = [at for at, _ in entries if first * 1e6 <= at <= last * 1e6 + 2e6]
        assert log.used(first * 1e6 - 1, first * 1e6 + WINDOW_US - 1) == LIMIT * UNITS
        assert log.used(in_round[-1] - WINDOW_US, in_round[-1]) == LIMIT * UNITS  # its edge
    for claim in claims:  # no needless refusal: the second before it held the limit
        if not claim.admitted:
            start = math.floor(claim.before * 1e6) - 2 - WINDOW_US
            assert log.used(start, math.ceil(claim.after * 1e6) + 2) >= LIMIT * UNITS


@pytest.mark.slow
@pytest.mark.redis
async def test_guardrails_stay_exact_at_window_edges_with_replica_clocks_skewed_2s(
        machine_redis_url: str, tmp_path: Path) -> None:
    namespace = unique_prefix("edge")
    env = {"EDGE_SERVICE_NAME": namespace, "EDGE_LIMIT": str(LIMIT),
           "BUTTRESS_GUARDRAILS_URL": machine_redis_url, "BUTTRESS_CACHE_URL": "memory://"}
    client = redis.asyncio.Redis.from_url(machine_redis_url)
    try:
        with skewed_server(EDGE_TARGET, tmp_path / "slow", OFFSETS[0], env) as slow, \
                skewed_server(EDGE_TARGET, tmp_path / "fast", OFFSETS[1], env) as fast:
            async with Burst([slow, fast], client) as burst:
                assert abs(burst.lag) < 0.05  # Redis runs on this machine
                await burst.warm(2 * LIMIT)
                started = time.monotonic()
                edges = await fixed_edges(burst)
                rounds = await sliding_rounds(burst, client, namespace)
                seconds = time.monotonic() - started
        fixed = await recorded(client, namespace, RECORDER, "fixed")
        sliding = await recorded(client, namespace, RECORDER, "sliding")
    finally:
        await client.aclose()
        await delete_namespaces(machine_redis_url, [namespace])

    claims = {user: [c for c in burst.claims if c.request_id.startswith(user)]
              for user in ("fixed", "sliding")}
    for server, offset, replica in ((slow, OFFSETS[0], 0), (fast, OFFSETS[1], 1)):
        check_skew(server, offset, [c for c in burst.claims if c.replica == replica])
    for user, entries in (("fixed", fixed), ("sliding", sliding)):  # the log is the answers
        assert sum(units for _, units in entries) == UNITS * sum(c.admitted for c in claims[user])
        assert {c.replica for c in claims[user] if c.admitted} == {0, 1}
    firsts = check_fixed(fixed, edges, claims["fixed"])
    check_sliding(sliding, rounds, claims["sliding"])
    admitted = {user: sum(c.admitted for c in found) for user, found in claims.items()}
    windows = sorted(units // UNITS for units in per_window(fixed, WINDOW_US).values())
    busiest = Log(sliding).busiest(WINDOW_US) // UNITS
    print(f"\n{FIXED}: {len(claims['fixed'])} claims around {EDGES} edges, {admitted['fixed']} "
          f"admitted, per window {windows}, first "
          f"admission after each edge at +{', +'.join(f'{ms:.0f}' for ms in firsts)} ms; "
          f"{SLIDING}: {len(claims['sliding'])} claims in {ROUNDS} rounds, "
          f"{admitted['sliding']} admitted, busiest second {busiest}; "
          f"{seconds:.1f} s")


async def test_local_clocks_4s_apart_would_overshoot_a_sliding_window(
        machine_redis_url: str) -> None:
    """The counter-check: what the same sliding window would admit if each replica stamped
    its admissions with its own clock (``Guardrails(clock=...)``, a test-only override of
    Redis ``TIME``), against the production path, in the same real second."""
    guard = [SlidingWindow("edge_local", LIMIT, "1s")]
    namespaces = [unique_prefix("edge-local"), unique_prefix("edge-server")]
    connections = Connections()
    local = [Guardrails(guard, machine_redis_url, namespaces[0],
                        clock=lambda offset=offset: time.time() + offset) for offset in OFFSETS]
    server = [Guardrails(guard, machine_redis_url, namespaces[1]) for _ in OFFSETS]
    try:
        admitted = {}
        for name, replicas in (("local", local), ("server", server)):
            total = 0
            for replica in replicas:  # the slow clock first, then the fast one
                await replica.open(connections)
                decisions = await replica.admit_many([({}, None)] * (2 * LIMIT))
                total += sum(d.admitted for d in decisions)
            admitted[name] = total
    finally:
        await connections.aclose()
        await delete_namespaces(machine_redis_url, namespaces)
    print(f"\nlocal clocks -2 s / +2 s: {admitted['local']} admitted; Redis TIME: "
          f"{admitted['server']} (limit {LIMIT} a second)")
    # the fast replica drops the slow one's entries as older than a second: twice the limit
    assert admitted == {"local": 2 * LIMIT, "server": LIMIT}


# -- caches and model versions ---------------------------------------------------------------

VERSIONED_TARGET = f"{REPO / 'tests/reliability/versioned_service.py'}:svc"
SCALES = {"v1": 1.0, "v2": 2.0}
ROWS = [orjson.dumps({"x": [(i % 7) / 10, (i % 5) / 10, 0.5]}) for i in range(35)]
"""35 distinct rows, sent again and again: after the first pass nearly every answer may be a
cache hit."""
CACHE_RATE = 100.0  # requests/s to each replica
PHASE = 2.0  # seconds of load between two registry moves


def scale(answer: Answer) -> float:
    """What the version that computed this answer multiplies ``sum(x)`` by."""
    row = orjson.loads(ROWS[answer.n % len(ROWS)])
    return float(orjson.loads(answer.body)["score"]) / sum(row["x"])


async def until_version(answers: list[Answer], version: str, since: float,
                        within: float = 10.0) -> float:
    """Seconds from ``since`` to the first answer with ``version`` sent after ``since``."""
    while True:
        found = [a.received for a in answers if a.sent > since and a.version == version]
        if found:
            return min(found) - since
        assert time.monotonic() - since < within, f"no {version} answer within {within} s"
        await asyncio.sleep(0.02)


@pytest.mark.slow
@pytest.mark.redis
async def test_no_replica_answers_with_another_versions_cached_prediction(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    """Two replicas on one Redis cache and registry: ``stable`` follows the stable alias
    (v1, then v2 by a promotion, then v1 by a rollback), ``candidate`` serves v2 throughout.
    Under a steady load of the same 35 rows, every answer's score is what its
    ``X-Model-Version`` computes, hit or miss; the stable replica's v2 answers are all hits on
    entries the other replica wrote (one shared cache), and after the rollback its v1 answers
    are hits on its own entries from before."""
    models = tmp_path / "models"
    env = {"BUTTRESS_REGISTRY_URL": private_redis.url, "BUTTRESS_MODELS_DIR": str(models),
           "BUTTRESS_CACHE_URL": private_redis.url}
    answers: list[list[Answer]] = [[], []]
    async with Registry(private_redis.url, models_dir=models) as registry:
        await registry.register("scorer", linear_file(tmp_path, 1.0), who="test")
        await registry.promote("scorer", "v1", who="test")
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="test")  # candidate
        with running_server(VERSIONED_TARGET, tmp_path / "stable",
                            env={**env, "VERSIONED_ALIAS": "stable"}) as stable, \
                running_server(VERSIONED_TARGET, tmp_path / "candidate",
                               env={**env, "VERSIONED_ALIAS": "candidate"}) as candidate:
            stop = asyncio.Event()
            loads = [asyncio.ensure_future(paced_load(
                server.base_url, ROWS, rate=CACHE_RATE, connections=8, prefix=f"r{replica}",
                stop=stop, on_answer=answers[replica].append))
                for replica, server in enumerate((stable, candidate))]
            await asyncio.sleep(PHASE)
            promoted = time.monotonic()
            await registry.promote("scorer", "v2", who="test")
            await until_version(answers[0], "v2", promoted)
            await asyncio.sleep(PHASE)
            rolled_back = time.monotonic()
            await registry.rollback("scorer", who="test")
            await until_version(answers[0], "v1", rolled_back)
            await asyncio.sleep(PHASE)
            stop.set()
            tallies = await asyncio.gather(*loads)

    served: Counter[tuple[int, str, str]] = Counter()
    for replica, found in enumerate(answers):
        for answer in found:
            assert (answer.status, answer.fallback) == (200, ""), answer
            assert scale(answer) == pytest.approx(SCALES[answer.version], rel=1e-3), answer
            served[(replica, answer.version, answer.headers["x-cache"])] += 1
    print(f"\n{sum(t.sent for t in tallies)} answers (replica, version, cache): "
          f"{dict(sorted(served.items()))}")
    assert {version for _, version, _ in served} == {"v1", "v2"}
    assert {version for replica, version, _ in served if replica == 1} == {"v2"}
    for replica, version in ((0, "v1"), (0, "v2"), (1, "v2")):
        assert served[(replica, version, "hit")] > 0
    assert served[(0, "v2", "miss")] == 0  # every v2 row was already cached by the other one
    after = [a for a in answers[0] if a.sent > rolled_back and a.version == "v1"]
    assert after
    assert all(a.headers["x-cache"] == "hit" for a in after)


# -- a rollback under load -------------------------------------------------------------------

DEMO_RATE = 150.0  # requests/s to each replica
SWITCH_GOAL = 2.0
"""Seconds from the registry's write (``buttress models rollback``) to every replica answering
with the version it rolled back to: published on Redis, then loaded and warmed up (the
watcher's 5 s re-check is only the fallback for a missed publish)."""
TOKEN = "replicas"
DEMO_EXAMPLE = orjson.dumps(EXAMPLE)


async def serving(servers: list[RunningServer], version: str, within: float = 15.0) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as http:
        for server in servers:
            while (await http.post(f"{server.base_url}/predict", content=DEMO_EXAMPLE)
                   ).headers.get("x-model-version") != version:
                assert time.monotonic() - started < within, f"{server.base_url} not on {version}"
                await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.redis
async def test_a_rollback_under_load_reaches_every_replica_with_no_failed_request(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    """Two demo replicas on one Redis registry serve v3 (a re-release of v1) under a steady
    load of varied orders; ``buttress models rollback discount`` mid-load puts v1 back."""
    env = {"BUTTRESS_REGISTRY_URL": private_redis.url,
           "BUTTRESS_MODELS_DIR": str(tmp_path / "models"), "BUTTRESS_ADMIN_TOKEN": TOKEN}
    bodies = [order.encode() for order in varied_orders(500)]
    answers: list[list[Answer]] = [[], []]
    # one after the other: the first registers the demo's versions, the second finds them
    with running_server(DEMO, tmp_path / "a", env=env) as a, \
            running_server(DEMO, tmp_path / "b", env=env) as b:
        for server in (a, b):
            await lift_demo_guardrails(server.base_url, TOKEN)
        async with Registry(private_redis.url, models_dir=tmp_path / "models") as registry:
            v1 = await registry.version("discount", "v1")
            again = await registry.register("discount", tmp_path / "models" / v1.path,
                                            who="test", allow_pickle=True)
            await registry.promote("discount", again.version, who="test", why="re-release")
        await serving([a, b], again.version)
        stop = asyncio.Event()
        loads = [asyncio.ensure_future(paced_load(
            server.base_url, bodies, rate=DEMO_RATE, connections=16, prefix=f"r{replica}",
            stop=stop, on_answer=answers[replica].append))
            for replica, server in enumerate((a, b))]
        await asyncio.sleep(2.0)
        typed = time.monotonic()
        command = await asyncio.create_subprocess_exec(
            *cli_command("models", "rollback", "discount", "--reason", "under load"),
            cwd=tmp_path, env=clean_environment(tmp_path, env),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await command.communicate()
        returned = time.monotonic()
        assert command.returncode == 0, output.decode()
        await asyncio.sleep(SWITCH_GOAL + 1.0)
        stop.set()
        tallies = await asyncio.gather(*loads)

        async with Registry(private_redis.url, models_dir=tmp_path / "models") as registry:
            change = (await registry.history("discount", limit=1))[0]
    assert (change.action, change.from_version, change.to_version) == (
        "rollback", again.version, "v1")
    written = change.at - (time.time() - time.monotonic())  # the registry's write, monotonic
    switched = []
    for found in answers:
        assert {a.version for a in found if a.sent < typed} == {again.version}
        first = min(a.received for a in found if a.version == "v1")
        switched.append(first - written)
        assert all(a.version == "v1" for a in found if a.sent > first)  # never back to v3
    failed = sum(t.sent - t.statuses[200] for t in tallies)  # non-200 or transport error
    fallbacks = sum((t.fallbacks for t in tallies), Counter[str]())
    print(f"\nrollback {again.version} -> v1 under {2 * DEMO_RATE:.0f} req/s: "
          f"{sum(t.sent for t in tallies)} requests, {failed} failed, fallbacks "
          f"{dict(fallbacks)}; the command took {returned - typed:.2f} s, wrote at "
          f"+{written - typed:.2f} s; replicas on v1 "
          f"{', '.join(f'{s:.3f}' for s in switched)} s after the write")
    assert failed == 0
    assert max(switched) < SWITCH_GOAL
    # a swap loads and warms the new version beside the old one: at most 1 % degraded answers
    # (a stage timeout on a shared machine), never a burst of fallbacks around the switch
    assert sum(fallbacks.values()) <= 0.01 * sum(t.sent for t in tallies)


@pytest.mark.redis
async def test_replicas_whose_clocks_are_a_minute_apart_both_show_as_serving(
        machine_redis_url: str, tmp_path: Path) -> None:
    """``/admin/models`` and ``buttress models list`` name the replicas serving a model from
    their heartbeats (``report_serving``, a 30 s TTL). One replica 60 s behind, one 60 s
    ahead, a reader on time: both heartbeats are fresh, both replicas should show."""
    namespace = unique_prefix("serving")

    def registry(offset: float) -> Registry:
        return Registry(machine_redis_url, models_dir=tmp_path / "models", namespace=namespace,
                        clock=lambda: time.time() + offset)

    try:
        async with registry(-60) as behind, registry(60) as ahead, registry(0) as reader:
            await behind.report_serving("behind:1", "scorer", "v1")
            await ahead.report_serving("ahead:2", "scorer", "v1")
            shown = {report.replica for report in await reader.serving("scorer")}
    finally:
        await delete_namespaces(machine_redis_url, [namespace])
    assert shown == {"behind:1", "ahead:2"}  # stamped by Redis TIME, whatever their clocks
