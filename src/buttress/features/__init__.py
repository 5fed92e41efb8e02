"""Feature store: declared per-entity features with defaults, batched look-ups, file loading.

Implementation lives in the submodules; this module only re-exports the public names.
"""

from __future__ import annotations

from buttress.features.loader import LoadError, LoadReport, RejectedRow, load_file, load_into
from buttress.features.store import (
    DEFAULT_NAMESPACE,
    FeatureBackend,
    FeatureLookup,
    FeatureStore,
    FeatureStoreUnavailable,
)
from buttress.features.table import EntityId, FeatureTable, Value

__all__ = [
    "DEFAULT_NAMESPACE",
    "EntityId",
    "FeatureBackend",
    "FeatureLookup",
    "FeatureStore",
    "FeatureStoreUnavailable",
    "FeatureTable",
    "LoadError",
    "LoadReport",
    "RejectedRow",
    "Value",
    "load_file",
    "load_into",
]
