"""Properties of the input interface, checked in-process through ``Runtime.answer``.

- Any JSON value, any mutation of a valid order, any bytes at all: the answer is 200, 400,
  413 or 422, never a 5xx (the server's own bugs are the only 5xx it may give).
- A valid order with any subset of its optional fields wrong-typed: 200, and exactly one
  ``defaulted`` contract violation per wrong field, at that field's path.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buttress.demo.service import EXAMPLE
from tests.reliability.inprocess import InProcessDemo, demo_in_process

ANSWERS = {200, 400, 413, 422}
MAX_BODY = 65_536
RUNS = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessDemo]:
    with demo_in_process(tmp_path_factory.mktemp("input"), max_body_bytes=MAX_BODY) as running:
        yield running


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=40,
)


def order_with_sub_orders(count: int) -> dict[str, Any]:
    order = copy.deepcopy(EXAMPLE)
    order["sub_orders"] = [{**EXAMPLE["sub_orders"][0], "sub_order_id": f"so-{i}"}
                           for i in range(count)]
    return order


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a document a value can be swapped (the root included)."""
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from paths(child, (*prefix, index))


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    document = copy.deepcopy(document)
    node = document
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return document


@st.composite
def mutated_orders(draw: st.DrawFn) -> Any:
    """A valid order with one to three places swapped for any JSON value or removed."""
    document: Any = order_with_sub_orders(draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(1, 3))):
        places = list(paths(document))
        path = draw(st.sampled_from(places))
        if path and draw(st.booleans()) and isinstance(document, dict):
            parent = document
            for part in path[:-1]:
                parent = parent[part]
            if isinstance(parent, dict):
                parent.pop(path[-1])
                continue
        document = replaced(document, path, draw(json_values))
    return document


def assert_answered(demo: InProcessDemo, body: bytes) -> None:
    answer = demo.answer(body)
    assert answer.status in ANSWERS, (answer.status, answer.body[:500], body[:500])
    if answer.status != 200:
        error = orjson.loads(answer.body)["error"]
        assert error["category"] == "input_invalid"


@RUNS
@given(document=json_values)
def test_any_json_value_gets_200_400_413_or_422(demo: InProcessDemo, document: Any) -> None:
    assert_answered(demo, json.dumps(document).encode())


@RUNS
@given(document=mutated_orders())
def test_any_mutated_order_gets_200_400_413_or_422(demo: InProcessDemo, document: Any) -> None:
    assert_answered(demo, json.dumps(document).encode())


@RUNS
@given(body=st.binary(max_size=2_000) | st.binary(max_size=64).map(
    lambda tail: orjson.dumps(EXAMPLE)[:-1] + tail))
def test_any_bytes_get_200_400_413_or_422(demo: InProcessDemo, body: bytes) -> None:
    assert_answered(demo, body)


def not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


# Values none of the optional fields accepts: the demo's str field (app_version) refuses
# numbers, objects, lists, booleans and null; its float and int fields (margin, quantity)
# refuse text that is no number, objects, lists and null. (Booleans and numeric strings are
# coerced by pydantic's lax mode, so they are not "wrong" for the numeric fields.)
WRONG_FOR_TEXT = (st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none()
                  | st.lists(st.integers(), max_size=2)
                  | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
WRONG_FOR_NUMBER = (st.text(alphabet="abcdefghjkmopqrsuvwxyz -_", min_size=1, max_size=8)
                    .filter(not_a_number)
                    | st.none() | st.lists(st.integers(), max_size=2)
                    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def orders_with_wrong_optional_fields(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    document = order_with_sub_orders(draw(st.integers(1, 4)))
    wrong: set[str] = set()
    if draw(st.booleans()):
        document["user"]["app_version"] = draw(WRONG_FOR_TEXT)
        wrong.add("user.app_version")
    for index, sub_order in enumerate(document["sub_orders"]):
        for name in ("margin", "quantity"):
            if draw(st.booleans()):
                sub_order[name] = draw(WRONG_FOR_NUMBER)
                wrong.add(f"sub_orders[{index}].{name}")
    return document, wrong


@RUNS
@given(case=orders_with_wrong_optional_fields())
def test_wrong_typed_optional_fields_take_their_defaults_one_violation_each(
    demo: InProcessDemo, case: tuple[dict[str, Any], set[str]]
) -> None:
    document, wrong = case
    answer = demo.answer(json.dumps(document).encode())
    assert answer.status == 200, answer.body
    violations = answer.context.violations
    assert sorted(v.path for v in violations) == sorted(wrong)
    assert all(v.kind == "defaulted" for v in violations)
    assert ("input_contract" in answer.context.fallback_categories) == bool(wrong)
