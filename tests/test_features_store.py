"""The feature store's contract, run unchanged on every backend (memory, sqlite, redis), plus
what only Redis can do: go down, time out, come back."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from buttress.backends import Connections
from buttress.backends.redis import namespaced_key
from buttress.features import (
    FeatureLookup,
    FeatureStore,
    FeatureStoreUnavailable,
    FeatureTable,
)
from buttress.resilience.categories import Category
from tests.support import (
    MACHINE_REDIS_URL,
    SENTINEL_URL_TEMPLATE,
    PrivateRedis,
    evalsha_calls,
    matrix_url,
    unique_prefix,
)

USER = FeatureTable(
    entity="user", defaults={"orders_count": 0, "return_rate": 0.0, "segment": "new"}
)
PRODUCT = FeatureTable(entity="product", defaults={"price_band": 1})

BACKENDS = [
    pytest.param("memory://", id="memory"),
    pytest.param("sqlite:///{tmp_path}/f.db", id="sqlite"),
    pytest.param(MACHINE_REDIS_URL, id="redis", marks=pytest.mark.redis),
    pytest.param(SENTINEL_URL_TEMPLATE, id="sentinel", marks=[pytest.mark.redis, pytest.mark.slow]),
]



@contextlib.asynccontextmanager
async def open_store(
    url: str, tables: Iterable[FeatureTable] = (USER, PRODUCT), **options: Any
) -> AsyncIterator[FeatureStore]:
    """An open store in a namespace of its own; on Redis its keys are deleted afterwards."""
    options.setdefault("namespace", unique_prefix("features"))
    connections = Connections()
    store = FeatureStore(url, tables, **options)
    await store.open(connections)
    try:
        yield store
    finally:
        await store.aclose()
        if store.url.is_redis:
            client = connections.redis(store.url)
            pattern = "buttress:{" + store.namespace + "}:*"
            keys = [key async for key in client.scan_iter(match=pattern, count=500)]
            if keys:
                await client.delete(*keys)
        await connections.aclose()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FeatureStore]:
    async with open_store(matrix_url(request.param, request, tmp_path)) as opened:
        yield opened


# --- the contract, on every backend ---------------------------------------------------------


async def test_put_then_get_round_trips_values_and_types(store: FeatureStore) -> None:
    written = await store.put_many(
        "user",
        {
            1: {"orders_count": 12, "return_rate": 0.1 + 0.2, "segment": "vip"},
            "u-2": {"orders_count": 3, "return_rate": 0.5, "segment": ""},
        },
    )
    lookup = await store.get_many("user", [1, "u-2"])

    assert written == 2
    assert lookup.rows == (
        {"orders_count": 12, "return_rate": 0.1 + 0.2, "segment": "vip"},
        {"orders_count": 3, "return_rate": 0.5, "segment": ""},
    )
    assert [type(v) for v in lookup.rows[0].values()] == [int, float, str]
    assert lookup.found == (True, True)
    assert lookup.missing == ()
    assert lookup.category is None


async def test_order_is_kept_with_duplicates_and_unknown_ids(store: FeatureStore) -> None:
    await store.put_many("user", [(1, {"orders_count": 1}), (2, {"orders_count": 2})])

    lookup = await store.get_many("user", [2, "404", 1, 2, "404", "405"])

    assert lookup.ids == ("2", "404", "1", "2", "404", "405")
    assert [row["orders_count"] for row in lookup.rows] == [2, 0, 1, 2, 0, 0]
    assert lookup.found == (True, False, True, True, False, False)
    assert lookup.missing == ("404", "405")
    assert lookup.category is Category.FEATURES_MISSING
    assert len(lookup) == 6


async def test_unknown_ids_and_missing_features_get_defaults(store: FeatureStore) -> None:
    await store.put_many("user", {7: {"return_rate": 0.25}})

    lookup = await store.get_many("user", [7, 8])

    assert lookup.rows[0] == {"orders_count": 0, "return_rate": 0.25, "segment": "new"}
    assert lookup.rows[1] == {"orders_count": 0, "return_rate": 0.0, "segment": "new"}
    assert lookup.found == (True, False)
    assert lookup.missing == ("8",)


async def test_put_is_an_upsert_per_feature(store: FeatureStore) -> None:
    await store.put_many("user", {1: {"orders_count": 1, "segment": "a"}})
    await store.put_many("user", {1: {"return_rate": 0.5, "segment": "b"}})
    await store.put_many("user", {1: {"return_rate": 0.5, "segment": "b"}})

    lookup = await store.get_many("user", [1])

    assert lookup.rows[0] == {"orders_count": 1, "return_rate": 0.5, "segment": "b"}


async def test_rows_are_the_callers_to_change(store: FeatureStore) -> None:
    await store.put_many("user", {1: {"orders_count": 5}})
    first = await store.get_many("user", [1, 1, 2, 2])

    for row in first.rows:
        row["orders_count"] = -1
    again = await store.get_many("user", [1, 2])

    assert [row["orders_count"] for row in again.rows] == [5, 0]
    assert store.defaults_for("user", [3]).rows[0]["orders_count"] == 0


async def test_put_converts_to_declared_types_or_writes_nothing(store: FeatureStore) -> None:
    await store.put_many("user", {1: {"orders_count": "4", "return_rate": 1, "segment": 9}})
    with pytest.raises(ValueError, match=r"'2'.*return_rate.*'lots' is not a number"):
        await store.put_many("user", {1: {"orders_count": 9}, 2: {"return_rate": "lots"}})
    with pytest.raises(ValueError, match="not a declared feature"):
        await store.put_many("user", {3: {"shoe_size": 42}})

    lookup = await store.get_many("user", [1, 2, 3])

    assert lookup.rows[0] == {"orders_count": 4, "return_rate": 1.0, "segment": "9"}
    assert lookup.found == (True, False, False)


async def test_entities_are_kept_apart(store: FeatureStore) -> None:
    await store.put_many("user", {1: {"orders_count": 3}})
    await store.put_many("product", {1: {"price_band": 4}})

    users = await store.get_many("user", [1])
    products = await store.get_many("product", [1])

    assert users.rows[0]["orders_count"] == 3
    assert products.rows == ({"price_band": 4},)


async def test_empty_lookup(store: FeatureStore) -> None:
    lookup = await store.get_many("user", [])
    assert (lookup.rows, lookup.missing, lookup.category) == ((), (), None)


async def test_defaults_for_is_the_unavailable_fallback(store: FeatureStore) -> None:
    await store.put_many("user", {1: {"orders_count": 3}})

    fallback = store.defaults_for("user", [1, 2])

    assert fallback.rows == (dict(USER.defaults), dict(USER.defaults))
    assert fallback.category is Category.FEATURES_UNAVAILABLE
    assert fallback.found == (False, False)


@pytest.mark.parametrize("template", BACKENDS)
async def test_on_missing_counts_positions_per_entity(
    template: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    seen: list[tuple[str, int]] = []
    url = matrix_url(template, request, tmp_path)
    async with open_store(url, on_missing=lambda entity, n: seen.append((entity, n))) as store:
        await store.put_many("user", {1: {"orders_count": 1}})
        await store.get_many("user", [1])
        await store.get_many("user", [1, 404, 404, 405])

    assert seen == [("user", 3)]


@pytest.mark.parametrize("template", BACKENDS[1:])
async def test_namespaces_do_not_share_rows(
    template: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = matrix_url(template, request, tmp_path)
    async with open_store(url) as one, open_store(url) as other:
        await one.put_many("user", {1: {"orders_count": 1}})
        assert (await other.get_many("user", [1])).missing == ("1",)
        assert (await one.get_many("user", [1])).found == (True,)


# --- declarations -------------------------------------------------------------------------


def test_feature_table_is_validated_immutable_and_readable() -> None:
    assert repr(USER) == (
        "FeatureTable(entity='user', defaults={'orders_count': 0, 'return_rate': 0.0, "
        "'segment': 'new'})"
    )
    assert USER.names == ("orders_count", "return_rate", "segment")
    assert FeatureTable(entity="user", defaults=dict(USER.defaults)) == USER
    assert hash(USER) == hash(FeatureTable(entity="user", defaults=dict(USER.defaults)))
    with pytest.raises(TypeError):
        USER.defaults["orders_count"] = 1  # type: ignore[index]
    with pytest.raises(TypeError, match="must be an int, a float or a str"):
        FeatureTable(entity="user", defaults={"vip": False})
    with pytest.raises(ValueError, match="declares no features"):
        FeatureTable(entity="user", defaults={})
    with pytest.raises(ValueError, match="identifier"):
        FeatureTable(entity="user:1", defaults={"a": 0})
    with pytest.raises(ValueError, match="identifier"):
        FeatureTable(entity="user", defaults={"a b": 0})
    with pytest.raises(ValueError, match="finite"):
        FeatureTable(entity="user", defaults={"a": float("nan")})


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("3", int, 3),
        (" 3 ", int, 3),
        ("3.0", int, 3),
        (3.0, int, 3),
        (b"7", int, 7),
        ("0.5", float, 0.5),
        (2, float, 2.0),
        ("x", str, "x"),
        (2.5, str, "2.5"),
    ],
)
def test_coerce_accepts(value: object, kind: type, expected: object) -> None:
    table = FeatureTable(entity="t", defaults={"f": kind()})
    result = table.coerce("f", value)
    assert result == expected
    assert type(result) is kind


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("3.5", int),
        (3.5, int),
        ("abc", int),
        ("", int),
        ("abc", float),
        ("nan", float),
        (float("inf"), float),
        (True, int),
        (None, str),
        ([1], str),
    ],
)
def test_coerce_refuses(value: object, kind: type) -> None:
    table = FeatureTable(entity="t", defaults={"f": kind()})
    with pytest.raises(ValueError):
        table.coerce("f", value)


async def test_store_is_built_without_io_and_checks_its_declarations() -> None:
    nowhere = FeatureStore("redis://127.0.0.1:1/0", [USER], namespace="n")
    assert repr(nowhere) == "FeatureStore('redis://127.0.0.1:1/0', namespace='n', entities=[user])"
    with pytest.raises(RuntimeError, match="not open"):
        await nowhere.get_many("user", [1])
    with pytest.raises(KeyError, match="'shop' is not declared"):
        nowhere.defaults_for("shop", [1])
    with pytest.raises(ValueError, match="scheme must be one of"):
        FeatureStore("postgres://db/x", [USER])
    with pytest.raises(ValueError, match="declared twice"):
        FeatureStore("memory://", [USER, USER])
    with pytest.raises(ValueError, match="namespace"):
        FeatureStore("memory://", [USER], namespace="a}b")


# --- SQLite specifics --------------------------------------------------------------------------


async def test_sqlite_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "f.db").write_bytes(b"not a database, just bytes" * 100)
    async with open_store(f"sqlite:///{tmp_path}/f.db") as store:
        with pytest.raises(FeatureStoreUnavailable, match="not a database"):
            await store.get_many("user", [1])
        with pytest.raises(FeatureStoreUnavailable):
            await store.put_many("user", {1: {"orders_count": 1}})


async def test_sqlite_values_written_by_others_are_converted_or_ignored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/f.db"
    async with open_store(url, namespace="shop") as store:
        await store.put_many("user", {1: {"segment": "vip"}})
    with sqlite3.connect(tmp_path / "f.db") as conn:
        conn.executemany(
            'INSERT INTO "features:shop:user" VALUES (?, ?, ?)',
            [("1", "orders_count", "12"), ("1", "return_rate", "lots"), ("1", "old", 5)],
        )
    conn.close()
    async with open_store(url, namespace="shop") as store:
        lookup = await store.get_many("user", [1])
    assert lookup.rows[0] == {"orders_count": 12, "return_rate": 0.0, "segment": "vip"}


# --- Redis specifics ---------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_keeps_one_cluster_safe_hash_per_id(machine_redis_url: str) -> None:
    async with open_store(machine_redis_url) as store:
        await store.put_many("user", {"u:1": {"orders_count": 2, "return_rate": 0.1}})
        client = Redis.from_url(machine_redis_url)
        try:
            key = namespaced_key(store.namespace, "features", "user", "u:1")
            assert key == f"buttress:{{{store.namespace}}}:features:user:u:1"
            assert await client.hgetall(key) == {b"orders_count": b"2", b"return_rate": b"0.1"}

            # values another writer left: parsed leniently, else the default stands
            await client.hset(
                key,
                mapping={"orders_count": "7.0", "return_rate": "nan", "segment": b"\xff"},
            )
            lookup = await store.get_many("user", ["u:1"])
            assert lookup.rows[0] == {"orders_count": 7, "return_rate": 0.0, "segment": "new"}
            assert lookup.found == (True,)
        finally:
            await client.aclose()


# --- Redis going away and coming back ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.redis
async def test_redis_lookups_of_one_loop_iteration_share_one_round_trip(
    private_redis: PrivateRedis,
) -> None:
    """100 concurrent look-ups (as 100 requests' feature stages make) cost one script call;
    a caller cancelled meanwhile (its stage timed out) costs the others nothing."""
    async with open_store(private_redis.url) as store:
        await store.put_many("user", {i: {"orders_count": i} for i in range(100)})
        await store.get_many("user", [0])  # the server learns the script (NOSCRIPT, load)
        client = Redis.from_url(private_redis.url)
        try:
            before = await evalsha_calls(client)
            lookups = [asyncio.ensure_future(store.get_many("user", [i, i + 1000]))
                       for i in range(100)]
            await asyncio.sleep(0)  # all of them queued, nothing sent yet
            lookups[7].cancel()
            results = await asyncio.gather(*lookups, return_exceptions=True)
            assert await evalsha_calls(client) - before == 1
        finally:
            await client.aclose()
    assert isinstance(results[7], asyncio.CancelledError)
    for i, lookup in enumerate(results):
        if i != 7:
            assert isinstance(lookup, FeatureLookup)
            assert lookup.rows[0]["orders_count"] == i
            assert lookup.missing == (str(i + 1000),)


@pytest.mark.slow
@pytest.mark.redis
async def test_redis_down_raises_unavailable_quickly_then_recovers(
    private_redis: PrivateRedis,
) -> None:
    timeout = 0.05
    async with open_store(private_redis.url + "?timeout=50ms") as store:
        await store.put_many("user", {1: {"orders_count": 1}})
        private_redis.stop()

        for _ in range(3):  # the pool's dead connection first, then refused connects
            started = time.perf_counter()
            with pytest.raises(FeatureStoreUnavailable):
                await store.get_many("user", [1, 2])
            assert time.perf_counter() - started < timeout + 0.1
        with pytest.raises(FeatureStoreUnavailable):
            await store.put_many("user", {1: {"orders_count": 2}})

        private_redis.start()
        assert (await store.get_many("user", [1])).missing == ("1",)  # a fresh, empty server
        await store.put_many("user", {1: {"orders_count": 3}})
        assert (await store.get_many("user", [1])).rows[0]["orders_count"] == 3


@pytest.mark.slow
@pytest.mark.redis
async def test_redis_that_hangs_times_out_and_replies_never_cross(
    private_redis: PrivateRedis,
) -> None:
    """A read that times out or is cancelled must not leave its reply for the next caller
    (redis-py #2665): once the server answers again, every id still gets its own features.
    SIGSTOP freezes the server with its socket open: connects and writes succeed, replies
    never come, like a server stuck in a long command or a network that drops packets."""
    assert private_redis.process is not None
    async with open_store(private_redis.url + "?timeout=50ms&max_connections=1") as store:
        await store.put_many("user", {i: {"orders_count": i} for i in range(1, 7)})
        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            started = time.perf_counter()
            with pytest.raises(FeatureStoreUnavailable, match="Timeout"):
                await store.get_many("user", [1, 2])
            assert time.perf_counter() - started < 0.05 + 0.1
            with pytest.raises(TimeoutError):  # the caller's deadline, shorter than the socket's
                await asyncio.wait_for(store.get_many("user", [3, 4]), timeout=0.01)
        finally:
            private_redis.process.send_signal(signal.SIGCONT)

        lookup: FeatureLookup = await store.get_many("user", [5, 6])
        assert [row["orders_count"] for row in lookup.rows] == [5, 6]
        lookup = await store.get_many("user", [6, 1])
        assert [row["orders_count"] for row in lookup.rows] == [6, 1]
