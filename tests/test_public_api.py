"""The public surface is small and deliberate: changing it must be a conscious act."""

import importlib
from pathlib import Path

import buttress as bt

# in the order ruff's RUF022 keeps __all__: constants, classes, then functions
PUBLIC = [
    "NO_FALLBACK", "AlertNotice", "Batch", "Breaker", "Cache", "Category", "ContractViolation",
    "FeatureStore", "FeatureTable", "FixedWindow", "FromRegistry", "Input", "Output", "Registry",
    "RemoteModel", "RequestContext", "RollbackRule", "Runtime", "Service", "Settings",
    "SlidingWindow", "__version__", "field", "load_settings",
]


def test_all_is_exactly_the_public_names() -> None:
    assert bt.__all__ == PUBLIC


def test_each_public_name_is_the_object_its_home_module_defines() -> None:
    """``bt.X`` is a re-export of the real thing, not a copy or a stand-in."""
    homes = {
        "Batch": "buttress.batching", "Breaker": "buttress.resilience.breaker",
        "Cache": "buttress.cache", "Category": "buttress.resilience.categories",
        "ContractViolation": "buttress.interface.contract",
        "FeatureStore": "buttress.features.store", "FeatureTable": "buttress.features.table",
        "FixedWindow": "buttress.guardrails", "Input": "buttress.interface.models",
        "Output": "buttress.interface.models", "RemoteModel": "buttress.runners.remote",
        "RequestContext": "buttress.pipeline.context", "Runtime": "buttress.pipeline.runtime",
        "Service": "buttress.service", "Settings": "buttress.config",
        "SlidingWindow": "buttress.guardrails", "field": "buttress.interface.models",
        "load_settings": "buttress.config", "NO_FALLBACK": "buttress.stages",
        "FromRegistry": "buttress.registry.declaration", "Registry": "buttress.registry.registry",
        "AlertNotice": "buttress.observability.alerts",
        "RollbackRule": "buttress.registry.rollback_rule",
    }
    for name, module in homes.items():
        assert getattr(bt, name) is getattr(importlib.import_module(module), name), name
    assert set(homes) | {"__version__"} == set(PUBLIC)


def test_categories_are_the_closed_set_of_design() -> None:
    assert [c.value for c in bt.Category] == [
        "input_invalid", "input_contract", "features_missing", "features_unavailable",
        "model_error", "model_timeout", "model_unavailable", "cache_unavailable",
        "overloaded", "guardrail_exceeded", "guardrail_unavailable", "events_dropped", "internal",
    ]


def test_a_service_type_checks_under_mypy_strict() -> None:
    """The declaration decorators keep the decorated function's type: no 'untyped
    decorator' error for users who run mypy --strict on their service."""
    from mypy import api

    path = Path(__file__).parent / "data" / "strict_service.py"
    out, err, status = api.run(["--strict", "--no-incremental", str(path)])
    assert status == 0, out + err
