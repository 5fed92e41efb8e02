"""The public surface is small and deliberate: changing it must be a conscious act."""

import buttress as bt

# in the order ruff's RUF022 keeps __all__: constants, classes, then functions
PUBLIC = [
    "NO_FALLBACK", "AlertNotice", "Batch", "Breaker", "Cache", "Category", "ContractViolation",
    "FeatureStore", "FeatureTable", "FixedWindow", "Input", "Output", "RemoteModel",
    "RequestContext", "Runtime", "Service", "Settings", "SlidingWindow", "__version__", "field",
    "load_settings",
]


def test_all_is_exactly_the_public_names() -> None:
    assert bt.__all__ == PUBLIC
    for name in bt.__all__:
        assert getattr(bt, name) is not None


def test_categories_are_the_closed_set_of_design() -> None:
    assert [c.value for c in bt.Category] == [
        "input_invalid", "input_contract", "features_missing", "features_unavailable",
        "model_error", "model_timeout", "model_unavailable", "cache_unavailable",
        "guardrail_exceeded", "guardrail_unavailable", "events_dropped", "internal",
    ]
