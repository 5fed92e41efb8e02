"""The declaration (``bt.Cache``) and the keys: canonical, versioned, narrowed."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from buttress.cache import Cache, KeyHasher, ResultCache, cache_key, canonical_json
from buttress.cache.keys import serializer_is_canonical


class User(BaseModel):
    id: int
    app_version: str = "unknown"


class SubOrder(BaseModel):
    sub_order_id: str
    product_id: int
    price: float
    margin: float = 0.0
    quantity: int = 1


class Order(BaseModel):
    order_id: str
    user: User
    sub_orders: list[SubOrder]


class Tagged(BaseModel):
    name: str
    weights: dict[str, float] = {}


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


ORDER_A = (
    b'{"order_id":"o-1","user":{"id":42,"app_version":"5.12.0"},'
    b'"sub_orders":[{"sub_order_id":"so-1","product_id":501,"price":499,"margin":0.18}]}'
)
# Same order: keys reordered, 499 spelled 499.00, quantity given as its default.
ORDER_B = (
    b'{"sub_orders":[{"quantity":1,"margin":0.18,"price":499.00,"product_id":501,'
    b'"sub_order_id":"so-1"}],"user":{"app_version":"5.12.0","id":42},"order_id":"o-1"}'
)


def test_cache_declaration_defaults_and_repr() -> None:
    cache = Cache()
    assert cache.ttl_seconds == 60.0
    assert cache.lock_seconds is None
    assert repr(cache) == (
        "Cache(ttl='60s', max_entries=10000, key=None, url=None, lock=False, breaker=None)"
    )
    assert Cache(lock=True).lock_seconds == 1.0
    assert Cache(lock="250ms").lock_seconds == 0.25


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"ttl": 0}, ValueError),
        ({"ttl": "soon"}, ValueError),
        ({"max_entries": 0}, ValueError),
        ({"max_entries": 1.5}, TypeError),
        ({"max_entries": True}, TypeError),
        ({"key": "user.id"}, TypeError),
        ({"url": "sqlite:///cache.db"}, ValueError),
        ({"url": "memcached://x"}, ValueError),
        ({"lock": "0s"}, ValueError),
    ],
)
def test_cache_declaration_is_validated(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Cache(**kwargs)  # type: ignore[arg-type]


def test_cache_declaration_is_frozen() -> None:
    cache = Cache()
    with pytest.raises(AttributeError):
        cache.ttl = "1s"  # type: ignore[misc]


def test_key_ignores_key_order_and_number_spelling() -> None:
    a = Order.model_validate_json(ORDER_A)
    b = Order.model_validate_json(ORDER_B)
    assert cache_key("svc", "response", "v1", a) == cache_key("svc", "response", "v1", b)
    different = Order.model_validate_json(ORDER_A.replace(b'"price":499', b'"price":498'))
    assert cache_key("svc", "response", "v1", a) != cache_key("svc", "response", "v1", different)


def test_key_is_a_128_bit_hex_digest() -> None:
    key = cache_key("svc", "response", "v1", {"a": 1})
    assert len(key) == 32
    int(key, 16)


def test_model_version_namespace_and_scope_are_in_the_key() -> None:
    order = Order.model_validate_json(ORDER_A)
    keys = {
        cache_key("svc", "response", "v1", order),
        cache_key("svc", "response", "v2", order),
        cache_key("svc", "features", "v1", order),
        cache_key("other", "response", "v1", order),
    }
    assert len(keys) == 4


def test_key_hasher_matches_cache_key_and_narrows() -> None:
    order = Order.model_validate_json(ORDER_A)
    whole = KeyHasher("svc", "response")
    assert whole(order, "v1") == cache_key("svc", "response", "v1", order)
    by_user = KeyHasher("svc", "features", narrow=lambda o: o.user.id)
    other_order = Order.model_validate_json(ORDER_A.replace(b'"o-1"', b'"o-2"'))
    assert (
        by_user(order, "v1") == by_user(other_order, "v1") == cache_key("svc", "features", "v1", 42)
    )
    assert whole(order, "v1") != whole(other_order, "v1")


def test_mapping_fields_are_sorted_before_hashing() -> None:
    assert not serializer_is_canonical(Tagged)
    assert not serializer_is_canonical(Loose)
    assert serializer_is_canonical(Order)
    a = Tagged.model_validate_json(b'{"name":"x","weights":{"b":1,"a":2.0}}')
    b = Tagged.model_validate_json(b'{"weights":{"a":2,"b":1.0},"name":"x"}')
    assert canonical_json(a) == canonical_json(b)
    c = Loose.model_validate_json(b'{"name":"x","p":1,"q":2}')
    d = Loose.model_validate_json(b'{"q":2,"name":"x","p":1}')
    assert canonical_json(c) == canonical_json(d)


def test_plain_payloads_sort_keys_and_sets() -> None:
    assert canonical_json({"b": 1, "a": {"d": 2, "c": 3}}) == canonical_json(
        {"a": {"c": 3, "d": 2}, "b": 1}
    )
    assert canonical_json({"s": {"b", "a", "c"}}) == b'{"s":["a","b","c"]}'
    assert canonical_json(np.array([1.5, 2.5])) == b"[1.5,2.5]"


def test_an_integer_past_64_bits_has_a_key() -> None:
    """A client may send any integer where an id is expected; a cache keyed on it must not
    fail the request (orjson writes no integer past 64 bits)."""
    huge = 11681439657091467493507072
    by_user = KeyHasher("svc", "features", narrow=lambda payload: payload["user"])
    assert by_user({"user": huge}) == by_user({"user": huge}) != by_user({"user": huge + 1})
    assert canonical_json({"b": [huge], "a": 1}) == b'{"a":1,"b":[11681439657091467493507072]}'


def test_a_payload_that_is_not_data_raises_type_error() -> None:
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


def test_the_declared_key_callable_narrows_the_running_cache_keys() -> None:
    cache = ResultCache(Cache(key=lambda o: o.user.id), namespace="svc", scope="features")
    order = Order.model_validate_json(ORDER_A)
    assert cache.key(order, "v1") == cache_key("svc", "features", "v1", 42)
