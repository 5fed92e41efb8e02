"""The input interface: aliases, defaults with recorded violations, refusals listing every field."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

import buttress as bt
from buttress.interface import ContractViolation, InputRejected, ParsedInput


class Address(bt.Input):
    city: str = "unknown"
    zip_code: int


class User(bt.Input):
    id: int
    app_version: str = "unknown"
    address: Address | None = None


class Line(bt.Input):
    sku: str
    price: float
    margin: float = bt.field(0.0, aliases=["seller_margin", "marge"])
    quantity: int = 1
    tags: list[str] = bt.field(default_factory=list)


class Order(bt.Input):
    order_id: str
    user: User
    lines: list[Line] = bt.field(min_length=1, max_length=3)


def order(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "order_id": "o-1",
        "user": {"id": 7, "app_version": "5.1"},
        "lines": [{"sku": "a", "price": 10.0, "margin": 0.2, "quantity": 2},
                  {"sku": "b", "price": 5.0}],
    }
    document.update(changes)
    return document


def parse(document: Any) -> ParsedInput:
    return Order.parse(orjson.dumps(document))


def rejected(body: bytes, **kwargs: Any) -> InputRejected:
    with pytest.raises(InputRejected) as caught:
        Order.parse(body, **kwargs)
    return caught.value


def rejected_by(model: type[bt.Input], body: bytes) -> InputRejected:
    with pytest.raises(InputRejected) as caught:
        model.parse(body)
    return caught.value


def by_path(violations: list[ContractViolation]) -> dict[str, ContractViolation]:
    return {v.path: v for v in violations}


def test_clean_request_validates_nested_models_without_violations() -> None:
    parsed = parse(order())
    assert parsed.violations == []
    assert not parsed.defaulted
    value = parsed.value
    assert isinstance(value, Order)
    assert isinstance(value.user, User)
    assert value.user.id == 7
    assert value.lines[0].margin == 0.2
    assert value.lines[1].quantity == 1  # default for an absent optional field is no violation


def test_alias_is_accepted_and_recorded_as_renamed() -> None:
    document = order()
    document["lines"][1] = {"sku": "b", "price": 5.0, "seller_margin": 0.4}
    parsed = parse(document)
    assert parsed.value.lines[1].margin == 0.4
    [violation] = parsed.violations
    assert violation == ContractViolation(
        "lines[1].seller_margin", "lines[].seller_margin", "renamed",
        expected="margin", received="seller_margin")
    assert not parsed.defaulted


def test_every_alias_works() -> None:
    document = order()
    document["lines"][0] = {"sku": "a", "price": 1.0, "marge": 0.1}
    assert parse(document).value.lines[0].margin == 0.1


def test_alias_text_in_a_value_is_not_a_rename() -> None:
    document = order()
    document["lines"][0]["sku"] = "seller_margin"
    assert parse(document).violations == []


def test_alias_in_the_wrong_object_is_an_unknown_key_not_a_rename() -> None:
    document = order(user={"id": 7, "seller_margin": 0.3})
    [violation] = parse(document).violations
    assert (violation.path, violation.kind) == ("user.seller_margin", "unknown_key")


def test_wrong_type_with_default_takes_the_default_and_says_what_was_wrong() -> None:
    document = order(user={"id": 7, "app_version": 512})
    document["lines"][1]["margin"] = "eighteen"
    document["lines"][0]["quantity"] = [2]
    parsed = parse(document)
    assert parsed.defaulted
    assert parsed.value.user.app_version == "unknown"
    assert parsed.value.lines[1].margin == 0.0
    assert parsed.value.lines[0].quantity == 1
    assert parsed.value.lines[0].margin == 0.2  # the untouched neighbours keep their values
    found = by_path(parsed.violations)
    assert set(found) == {"user.app_version", "lines[1].margin", "lines[0].quantity"}
    margin = found["lines[1].margin"]
    assert (margin.field, margin.kind, margin.expected, margin.received) == (
        "lines[].margin", "defaulted", "float", "string")
    assert (found["user.app_version"].expected, found["user.app_version"].received) == (
        "str", "integer")
    assert found["lines[0].quantity"].received == "array"
    assert margin.message  # pydantic's explanation is kept for the event


def test_bad_value_under_an_alias_is_defaulted_under_that_path() -> None:
    document = order()
    document["lines"][0] = {"sku": "a", "price": 1.0, "seller_margin": "lots"}
    parsed = parse(document)
    assert parsed.value.lines[0].margin == 0.0
    [violation] = parsed.violations
    assert (violation.path, violation.kind) == ("lines[0].seller_margin", "defaulted")


def test_nested_error_defaults_the_deepest_field_that_has_a_default() -> None:
    # zip_code has no default, so the whole optional address takes its default (None) ...
    parsed = parse(order(user={"id": 7, "address": {"zip_code": "abc"}}))
    assert parsed.value.user.address is None
    assert [(v.path, v.kind) for v in parsed.violations] == [("user.address", "defaulted")]
    # ... while a bad city (which has a default) only resets the city.
    parsed = parse(order(user={"id": 7, "address": {"zip_code": 1234, "city": 5}}))
    assert parsed.value.user.address == Address(city="unknown", zip_code=1234)
    assert [(v.path, v.kind) for v in parsed.violations] == [("user.address.city", "defaulted")]


def test_unknown_keys_are_recorded_and_dropped() -> None:
    document = order(extra_top=1, user={"id": 7, "nickname": "x"})
    document["lines"][1]["colour"] = ["red"]
    parsed = parse(document)
    found = by_path(parsed.violations)
    assert set(found) == {"extra_top", "user.nickname", "lines[1].colour"}
    assert all(v.kind == "unknown_key" for v in found.values())
    assert {v.field for v in found.values()} == {"<unknown>"}  # a client's key is no label
    assert found["lines[1].colour"].received == "array"
    dumped = parsed.value.model_dump()
    assert "extra_top" not in dumped
    assert "nickname" not in dumped["user"]
    assert "colour" not in dumped["lines"][1]
    assert not parsed.defaulted  # unknown keys are reported, not a fallback


def test_many_unknown_keys_list_the_first_twenty_cut_short_and_count_the_rest() -> None:
    document = order(user={"id": 7, "app_version": "5.1", **{f"u{i}": i for i in range(5)}})
    long_key = "k" * 1000
    document[long_key] = 1
    document.update({f"key-{i}": i for i in range(5_000)})
    parsed = parse(document)
    listed = [v for v in parsed.violations if v.count == 1]
    [rest] = [v for v in parsed.violations if v.count != 1]
    assert len(listed) == 20
    assert {v.field for v in parsed.violations} == {"<unknown>"}
    assert {v.kind for v in parsed.violations} == {"unknown_key"}
    assert len(listed) + rest.count == 5_006  # every key counted, twenty of them by name
    assert rest.as_dict()["count"] == rest.count
    assert max(len(v.path) for v in listed) <= 64 + len("...")
    assert all(v.path.startswith(("key-", "kkkk")) for v in listed)
    assert parsed.value.model_dump() == Order.parse(orjson.dumps(order())).value.model_dump()


def test_a_bad_value_under_a_clients_dict_key_is_labelled_by_the_declared_field() -> None:
    class Tagged(bt.Input):
        weights: dict[str, float]

    error = rejected_by(Tagged, orjson.dumps({"weights": {"attacker-chosen": "x"}}))
    [violation] = error.violations
    assert violation.path == "weights.attacker-chosen"
    assert violation.field == "weights"


def test_unknown_keys_renames_and_bad_fields_are_all_reported_together() -> None:
    document = order(user={"id": 7, "nickname": "x", "app_version": 512})
    document["lines"][0] = {"sku": "a", "price": 1.0, "seller_margin": 0.3, "colour": "red"}
    parsed = parse(document)
    kinds = {path: v.kind for path, v in by_path(parsed.violations).items()}
    assert kinds == {"user.nickname": "unknown_key", "lines[0].colour": "unknown_key",
                     "lines[0].seller_margin": "renamed", "user.app_version": "defaulted"}
    assert parsed.value.lines[0].margin == 0.3
    assert parsed.value.user.app_version == "unknown"


def test_all_fatal_fields_are_listed_at_once() -> None:
    body = orjson.dumps({"user": {"app_version": "5"},
                         "lines": [{"price": "ten"}, {"sku": "b", "price": 1, "margin": "x"}]})
    error = rejected(body)
    assert error.status == 422
    found = by_path(error.violations)
    assert {p: v.kind for p, v in found.items() if v.kind != "defaulted"} == {
        "order_id": "missing", "user.id": "missing", "lines[0].sku": "missing",
        "lines[0].price": "invalid"}
    assert found["lines[0].price"].received == "string"
    assert [v["field"] for v in (x.as_dict() for x in error.violations)].count("order_id") == 1


def test_required_list_over_its_max_length_is_422() -> None:
    line = {"sku": "a", "price": 1.0}
    error = rejected(orjson.dumps(order(lines=[line] * 4)))
    assert error.status == 422
    [violation] = error.violations
    assert (violation.path, violation.kind) == ("lines", "invalid")
    assert "at most 3" in violation.message
    assert rejected(orjson.dumps(order(lines=[]))).status == 422


def test_lists_without_max_length_get_the_default_cap() -> None:
    class Bag(bt.Input):
        items: list[int]

    class SmallBag(bt.Input):
        max_list_items = 5
        items: list[int]

    assert len(Bag.parse(orjson.dumps({"items": list(range(1000))})).value.items) == 1000
    with pytest.raises(InputRejected) as caught:
        Bag.parse(orjson.dumps({"items": list(range(1001))}))
    assert caught.value.status == 422
    with pytest.raises(InputRejected):
        SmallBag.parse(orjson.dumps({"items": list(range(6))}))
    # a capped list that has a default falls back to it instead
    document = order()
    document["lines"][0]["tags"] = ["t"] * 1001
    parsed = parse(document)
    assert parsed.value.lines[0].tags == []
    assert [(v.path, v.kind) for v in parsed.violations] == [("lines[0].tags", "defaulted")]


@pytest.mark.parametrize("opening", [b"[", b'{"k":'])
def test_json_nested_deeper_than_the_cap_is_400(opening: bytes) -> None:
    closing = b"]" if opening == b"[" else b"}"
    too_deep = b'{"order_id": ' + opening * 64 + b"1" + closing * 64 + b"}"
    error = rejected(too_deep)
    assert error.status == 400
    assert "deeper than 64" in error.message
    at_cap = b'{"order_id": ' + opening * 63 + b"1" + closing * 63 + b"}"
    assert rejected(at_cap).status == 422  # parsed, then refused by the contract
    assert rejected(at_cap, max_depth=10).status == 400


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    document = order()
    document["lines"][0]["sku"] = "[{" * 200 + '\\"'
    assert parse(document).value.lines[0].sku == "[{" * 200 + '\\"'


def test_malformed_json_is_400() -> None:
    for body in (b"", b"{", b'{"order_id": "o-1",}', b"\xff\xfe"):
        error = rejected(body)
        assert error.status == 400, body
        assert error.message.startswith("malformed JSON")


@pytest.mark.parametrize(("body", "received"), [
    (b"[]", "array"), (b"42", "integer"), (b'"order"', "string"), (b"null", "null"),
    (b"true", "boolean"),
])
def test_non_object_body_is_422(body: bytes, received: str) -> None:
    error = rejected(body)
    assert error.status == 422
    [violation] = error.violations
    assert (violation.kind, violation.expected, violation.received) == (
        "invalid", "object", received)


def test_json_only_pydantic_accepts_is_still_judged_by_the_contract() -> None:
    # NaN and integers past 64 bits are valid for pydantic's parser but not for orjson;
    # the failure path must read the body the same way the fast path did (was a 500).
    error = rejected(b'{"order_id": NaN, "user": {"id": 7}, "lines": [{"sku": "a", "price": 1}]}')
    assert error.status == 422
    assert [(v.path, v.received) for v in error.violations] == [("order_id", "number")]
    huge = b'{"order_id": "o", "user": {"id": 7, "app_version": 123456789012345678901234567890},' \
           b' "lines": [{"sku": "a", "seller_margin": 0.1, "price": 1}]}'
    parsed = Order.parse(huge)
    assert parsed.value.user.app_version == "unknown"
    assert {v.kind for v in parsed.violations} == {"defaulted", "renamed"}


@pytest.mark.parametrize("number", [b"NaN", b"-Infinity", b"Infinity", b"1e400", b"-1e400"])
def test_non_finite_numbers_are_refused_like_wrong_types(number: bytes) -> None:
    # They passed, and a guardrail summing prices then failed (a 200 with x-fallback: internal).
    line = b'{"sku": "a", "price": %s}' % number
    error = rejected(b'{"order_id": "o", "user": {"id": 7}, "lines": [%s]}' % line)
    assert error.status == 422
    assert [(v.path, v.field, v.kind) for v in error.violations] == [
        ("lines[0].price", "lines[].price", "invalid")]
    defaulted = b'{"sku": "a", "price": 1, "margin": %s}' % number  # a default is used instead
    parsed = Order.parse(b'{"order_id": "o", "user": {"id": 7}, "lines": [%s]}' % defaulted)
    assert parsed.value.lines[0].margin == 0.0
    assert [(v.path, v.kind) for v in parsed.violations] == [("lines[0].margin", "defaulted")]
    with pytest.raises(InputRejected):  # a decoded document (a queue's message) alike
        Order.parse_object(order(lines=[{"sku": "a", "price": float(number)}]))


def test_a_model_may_opt_in_to_non_finite_numbers() -> None:
    class Reading(bt.Input, allow_inf_nan=True):
        value: float

    class Mixed(bt.Input):
        value: float = bt.field(allow_inf_nan=True)
        other: float = 0.0

    assert math.isnan(Reading.parse(b'{"value": NaN}').value.value)
    assert Reading.parse(b'{"value": 1e400}').value.value == float("inf")
    parsed = Mixed.parse(b'{"value": -Infinity, "other": NaN}')
    assert parsed.value.value == float("-inf")
    assert [(v.path, v.kind) for v in parsed.violations] == [("other", "defaulted")]


def test_declared_ranges_refuse_or_default_like_any_constraint() -> None:
    class Item(bt.Input):
        price: float = bt.field(ge=0)
        quantity: int = bt.field(1, ge=1)

    error = rejected_by(Item, b'{"price": -1}')
    assert [(v.path, v.kind) for v in error.violations] == [("price", "invalid")]
    parsed = Item.parse(b'{"price": 2.5, "quantity": -5}')
    assert parsed.value.quantity == 1
    assert [(v.path, v.kind) for v in parsed.violations] == [("quantity", "defaulted")]


def test_parse_object_applies_the_same_rules() -> None:
    document = order(surprise=True)
    document["lines"][0] = {"sku": "a", "price": 1.0, "seller_margin": "bad"}
    parsed = Order.parse_object(document)
    assert parsed.value.lines[0].margin == 0.0
    assert {(v.path, v.kind) for v in parsed.violations} == {
        ("lines[0].seller_margin", "defaulted"), ("surprise", "unknown_key")}
    with pytest.raises(InputRejected):
        Order.parse_object({"order_id": "o"})


def test_violation_as_dict_has_the_error_json_keys() -> None:
    violation = ContractViolation("a[1].b", "a[].b", "defaulted", "float", "string", "bad")
    assert violation.as_dict() == {"field": "a[1].b", "kind": "defaulted", "expected": "float",
                                   "received": "string", "message": "bad"}


def test_output_serializes_to_json_and_forbids_extra_fields() -> None:
    class Answer(bt.Output):
        id: str
        score: float

    assert orjson.loads(Answer(id="x", score=1.5).to_json()) == {"id": "x", "score": 1.5}
    with pytest.raises(ValueError):
        Answer(id="x", score=1.0, other=1)  # type: ignore[call-arg]


def test_the_examples_of_docs_input_md_run() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs/input.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "docs/input.md", "exec"), {"__name__": "docs_input"})
