"""The public surface is small and deliberate: changing it must be a conscious act."""

import importlib

import buttress as bt

# in the order ruff's RUF022 keeps __all__: constants, classes, then functions
PUBLIC = [
    "NO_FALLBACK", "AlertNotice", "Batch", "Breaker", "Cache", "Category", "ContractViolation",
    "FeatureStore", "FeatureTable", "FixedWindow", "FromRegistry", "Input", "Output", "Registry",
    "RemoteModel", "RequestContext", "Runtime", "Service", "Settings", "SlidingWindow",
    "__version__", "field", "load_settings",
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
