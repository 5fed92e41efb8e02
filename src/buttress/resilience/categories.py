"""The closed set of error categories.

Every caught failure has exactly one category. Each one is a metric label, an event field, a
dashboard series and a possible alert, so the set is closed: adding a member is a public change.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol

import orjson


class Category(StrEnum):
    INPUT_INVALID = "input_invalid"
    """The request cannot be served: malformed JSON, too large, or a required field is bad."""
    INPUT_CONTRACT = "input_contract"
    """A field broke the contract but had a default, which was used instead."""
    FEATURES_MISSING = "features_missing"
    """An id had no features in the store; default features were used."""
    FEATURES_UNAVAILABLE = "features_unavailable"
    """The feature store failed, timed out or its breaker is open; defaults were used."""
    MODEL_ERROR = "model_error"
    """The model raised; the default prediction was used."""
    MODEL_TIMEOUT = "model_timeout"
    """The model did not answer within its share of the deadline."""
    MODEL_UNAVAILABLE = "model_unavailable"
    """The model's breaker is open or its queue is full; the request was shed to the fallback."""
    CACHE_UNAVAILABLE = "cache_unavailable"
    """The cache backend failed; treated as a miss."""
    OVERLOADED = "overloaded"
    """The server was at its concurrency limit: answered at once with every stage's fallback
    (or 503 with ``Retry-After``), so that the requests it admitted keep their pipeline."""
    GUARDRAIL_EXCEEDED = "guardrail_exceeded"
    """A guardrail's budget was spent; the default prediction was used."""
    GUARDRAIL_UNAVAILABLE = "guardrail_unavailable"
    """The guardrail backend failed; its fail policy decided."""
    EVENTS_DROPPED = "events_dropped"
    """The event buffer was full; events were dropped rather than blocking requests."""
    INTERNAL = "internal"
    """A bug or an unexpected failure with no fallback."""


class _Field(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


def error_body(category: str, message: str, fields: Sequence[_Field] = ()) -> bytes:
    """The one JSON error format clients get from every route:
    ``{"error": {"category": ..., "message": ..., "fields": [...]}}``."""
    return orjson.dumps({"error": {"category": category, "message": message,
                                   "fields": [f.as_dict() for f in fields]}})
