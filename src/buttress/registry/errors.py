"""What can go wrong with the registry, one exception type per thing the caller decides on.

The CLI turns each into a one-line error; the admin API into a status code: an unknown name or
version is 404, a refused artifact is never served, an unreachable registry is 503.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every registry error."""


class UnknownModel(RegistryError, LookupError):
    """No model of that name is registered."""


class UnknownVersion(RegistryError, LookupError):
    """The model has no such version, or the alias points at none."""


class VersionExists(RegistryError):
    """A version is immutable once registered: registering it again is refused."""


class NothingToRollBack(RegistryError):
    """The stable alias has no earlier version to go back to."""


class RegistryUnavailable(RegistryError):
    """The registry's storage failed or timed out."""


class ArtifactRefused(RegistryError):
    """An artifact that must not be loaded; ``reason`` is a bounded metric label."""

    reason = "refused"


class ChecksumMismatch(ArtifactRefused):
    """The artifact's bytes are not the ones registered (changed on disk, or truncated)."""

    reason = "checksum"


class PickleRefused(ArtifactRefused):
    """pickle/joblib runs code on load: refused unless allowed at registration *and* load."""

    reason = "pickle"


class UntrustedTypes(ArtifactRefused):
    """A skops file holds types nobody declared trusted."""

    reason = "untrusted_types"

    def __init__(self, message: str, types: list[str]) -> None:
        super().__init__(message)
        self.types = types


class ArtifactMissing(ArtifactRefused):
    """The registered artifact is not in the models directory (moved, deleted, not shared)."""

    reason = "missing"
