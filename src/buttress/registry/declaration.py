"""``bt.FromRegistry``: a model stage names what to serve by registry alias, not by object.

    @svc.model(model=bt.FromRegistry("discount", alias="stable"), ...)

A small immutable declaration, checked when it is written (a typo in the name fails at import,
not at the first request). ``registry`` is a registry URL, or ``None`` for the service's
``registry_url`` setting. ``allow_pickle`` is the loading side's half of the pickle opt-in
(the other half is ``--allow-pickle`` at registration); ``trusted_types`` adds skops types to
those trusted at registration.
"""

from __future__ import annotations

from dataclasses import dataclass

from buttress.backends import parse_backend_url
from buttress.registry.records import check_alias, check_name


@dataclass(frozen=True)
class FromRegistry:
    name: str
    alias: str = "stable"
    registry: str | None = None
    allow_pickle: bool = False
    trusted_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name("model name", self.name)
        check_alias(self.alias)
        if self.registry is not None:
            url = parse_backend_url(self.registry)
            if not (url.is_sqlite or url.is_redis):
                raise ValueError(f"registry URL {url.redacted()!r}: use sqlite:///path.db or "
                                 "redis://host:port/db")
        if not isinstance(self.allow_pickle, bool):
            raise TypeError("allow_pickle must be True or False")
        if isinstance(self.trusted_types, str):
            raise TypeError("trusted_types is a tuple of type names, not one string")
        object.__setattr__(self, "trusted_types", tuple(self.trusted_types))

    def __repr__(self) -> str:
        shown = [repr(self.name), f"alias={self.alias!r}"]
        if self.registry is not None:
            shown.append(f"registry={parse_backend_url(self.registry).redacted()!r}")
        if self.allow_pickle:
            shown.append("allow_pickle=True")
        if self.trusted_types:
            shown.append(f"trusted_types={self.trusted_types!r}")
        return f"FromRegistry({', '.join(shown)})"
