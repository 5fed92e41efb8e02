"""Guardrail declarations: validated when declared, readable, immutable; the per-process warning."""

from __future__ import annotations

import dataclasses

import pytest

from buttress.guardrails import (
    Decision,
    FixedWindow,
    Guardrail,
    Guardrails,
    SlidingWindow,
    warn_if_per_process,
)
from buttress.guardrails.policy import UNITS, to_units
from buttress.resilience.categories import Category


def discount_value(request: object, prediction: float) -> float:
    return prediction


def user_of(request: dict[str, str]) -> str:
    return request["user"]


def test_declarations_parse_the_window_and_read_well() -> None:
    sliding = SlidingWindow("discount_value", 50_000, "1min", measure=discount_value)
    fixed = FixedWindow("orders_per_user", 3, "1h", key=user_of, fail="open")
    assert sliding.window_seconds == 60.0
    assert fixed.window_seconds == 3600.0
    assert FixedWindow("n", 1, 0.5).window_seconds == 0.5
    assert repr(sliding) == (
        "SlidingWindow('discount_value', limit=50000, window='1min', measure=discount_value)"
    )
    assert repr(fixed) == (
        "FixedWindow('orders_per_user', limit=3, window='1h', key=user_of, fail='open')"
    )
    assert sliding.kind == "sliding"
    assert fixed.kind == "fixed"


def test_declarations_are_frozen_and_compare_by_value() -> None:
    guard = FixedWindow("n", 3, "1h")
    with pytest.raises(dataclasses.FrozenInstanceError):
        guard.limit = 4  # type: ignore[misc]
    assert guard == FixedWindow("n", 3, "1h")
    assert guard != SlidingWindow("n", 3, "1h")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "", "limit": 1, "window": "1s"}, ValueError),
        ({"name": "has space", "limit": 1, "window": "1s"}, ValueError),
        ({"name": "a:b", "limit": 1, "window": "1s"}, ValueError),
        ({"name": "n", "limit": -1, "window": "1s"}, ValueError),
        ({"name": "n", "limit": 1e10, "window": "1s"}, ValueError),
        ({"name": "n", "limit": float("nan"), "window": "1s"}, ValueError),
        ({"name": "n", "limit": "3", "window": "1s"}, TypeError),
        ({"name": "n", "limit": True, "window": "1s"}, TypeError),
        ({"name": "n", "limit": 1, "window": "soon"}, ValueError),
        ({"name": "n", "limit": 1, "window": 0}, ValueError),
        ({"name": "n", "limit": 1, "window": "1s", "measure": 3}, TypeError),
        ({"name": "n", "limit": 1, "window": "1s", "key": "user"}, TypeError),
        ({"name": "n", "limit": 1, "window": "1s", "fail": "maybe"}, ValueError),
    ],
)
def test_bad_declarations_fail_when_declared(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        FixedWindow(**kwargs)  # type: ignore[arg-type]


def test_the_base_class_is_not_a_declaration() -> None:
    with pytest.raises(TypeError):
        Guardrail("n", 1, "1s")


def test_an_evaluator_rejects_duplicate_names_and_other_backends() -> None:
    with pytest.raises(ValueError, match="unique"):
        Guardrails([FixedWindow("n", 1, "1s"), SlidingWindow("n", 1, "1s")])
    with pytest.raises(ValueError, match="memory:// or redis://"):
        Guardrails([FixedWindow("n", 1, "1s")], "sqlite:///x.db")
    with pytest.raises(ValueError, match="unknown backend"):
        Guardrails([FixedWindow("n", 1, "1s")], "mongo://x")


def test_costs_are_counted_in_exact_millionths() -> None:
    assert to_units(0.1) == 100_000
    assert to_units(1) == UNITS
    assert to_units(12.3456784) == 12_345_678
    assert sum(to_units(0.1) for _ in range(1000)) == to_units(100)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            to_units(bad)


def test_decision_categories() -> None:
    assert Decision(True).category is None
    assert Decision(False, ("n",)).category is Category.GUARDRAIL_EXCEEDED
    assert Decision(False, ("n",), unavailable=True).category is Category.GUARDRAIL_UNAVAILABLE
    assert Decision(True, (), unavailable=True).category is Category.GUARDRAIL_UNAVAILABLE
    assert Decision(False, ("n",), error="boom").category is Category.INTERNAL


def test_memory_with_several_workers_warns() -> None:
    message = warn_if_per_process("memory://", 4)
    assert message is not None
    assert "4 workers" in message
    assert "redis://" in message
    assert warn_if_per_process("memory://", 1) is None
    assert warn_if_per_process("redis://127.0.0.1:6379/0", 4) is None
