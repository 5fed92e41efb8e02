"""The model registry: versioned artifacts with checksums, aliases, audit history, watchers.

Implementation lives in the submodules; this module only re-exports the public names.
"""

from __future__ import annotations

from buttress.registry.declaration import FromRegistry
from buttress.registry.errors import (
    ArtifactMissing,
    ArtifactRefused,
    ChecksumMismatch,
    NothingToRollBack,
    PickleRefused,
    RegistryError,
    RegistryUnavailable,
    UnknownModel,
    UnknownVersion,
    UntrustedTypes,
    VersionExists,
)
from buttress.registry.formats import FORMATS
from buttress.registry.loading import LoadedModel
from buttress.registry.records import (
    ALIASES,
    AliasMoved,
    AliasState,
    Change,
    ModelVersion,
    Serving,
)
from buttress.registry.registry import DEFAULT_MODELS_DIR, DEFAULT_URL, Registry
from buttress.registry.watch import RegistryWatcher

__all__ = [
    "ALIASES",
    "DEFAULT_MODELS_DIR",
    "DEFAULT_URL",
    "FORMATS",
    "AliasMoved",
    "AliasState",
    "ArtifactMissing",
    "ArtifactRefused",
    "Change",
    "ChecksumMismatch",
    "FromRegistry",
    "LoadedModel",
    "ModelVersion",
    "NothingToRollBack",
    "PickleRefused",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "RegistryWatcher",
    "Serving",
    "UnknownModel",
    "UnknownVersion",
    "UntrustedTypes",
    "VersionExists",
]
