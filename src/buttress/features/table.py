"""An entity's features, declared once with a default per feature.

The default is also the feature's *type*: ``0`` declares an int, ``0.0`` a float, ``""`` a
string. Every value written to the store is converted to that type first (:meth:`coerce`), so a
reader always gets the declared type back, whatever the backend. Booleans are refused: they are
ints in Python but not in CSV, Parquet or Redis, and a silent ``True -> 1`` hides mistakes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

Value = int | float | str
"""A feature value: a number or a string."""

EntityId = str | int
"""An entity id as callers pass it; the store keys everything by ``str(id)``."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, repr=False)
class FeatureTable:
    """The features of one entity and their defaults.

    >>> FeatureTable(entity="user", defaults={"orders_count": 0, "return_rate": 0.0})
    FeatureTable(entity='user', defaults={'orders_count': 0, 'return_rate': 0.0})
    """

    entity: str
    defaults: Mapping[str, Value]

    def __post_init__(self) -> None:
        if not _NAME.match(self.entity):
            raise ValueError(
                f"FeatureTable.entity must be an identifier (letters, digits, _), "
                f"got {self.entity!r}"
            )
        if not self.defaults:
            raise ValueError(f"FeatureTable({self.entity!r}) declares no features")
        frozen: dict[str, Value] = {}
        for name, default in self.defaults.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(
                    f"FeatureTable({self.entity!r}): feature name {name!r} must be an identifier"
                )
            if isinstance(default, bool) or not isinstance(default, int | float | str):
                raise TypeError(
                    f"FeatureTable({self.entity!r}): the default of {name!r} must be an int, "
                    f"a float or a str, got {default!r}"
                )
            if isinstance(default, float) and not math.isfinite(default):
                raise ValueError(
                    f"FeatureTable({self.entity!r}): the default of {name!r} must be finite"
                )
            frozen[name] = default
        object.__setattr__(self, "defaults", MappingProxyType(frozen))
        # Copying a plain dict is several times faster than copying a mappingproxy, and
        # every looked-up row starts as such a copy.
        object.__setattr__(self, "_plain_defaults", frozen)

    @property
    def names(self) -> tuple[str, ...]:
        """The declared feature names, in declaration order."""
        return tuple(self.defaults)

    def kind(self, name: str) -> type[Value]:
        """The declared type of feature ``name`` (``int``, ``float`` or ``str``)."""
        return type(self.defaults[name])

    def row_of_defaults(self) -> dict[str, Value]:
        """A fresh dict of the defaults, safe for the caller to change."""
        plain: dict[str, Value] = self.__dict__["_plain_defaults"]
        return plain.copy()

    def complete(self, stored: Iterable[Mapping[str, Value]]) -> tuple[dict[str, Value], ...]:
        """Each stored row with the defaults filled in, as fresh dicts (``{}``: all defaults).

        One merged dict per row: ≈ 2x cheaper than copying the defaults and updating them,
        and it runs for every look-up of every request."""
        plain: dict[str, Value] = self.__dict__["_plain_defaults"]
        return tuple([{**plain, **row} for row in stored])

    def coerce(self, name: str, value: object) -> Value:
        """``value`` converted to the declared type of ``name``; ``ValueError`` says why not.

        Strings are parsed (CSV cells, Redis replies), ints widen to floats, integral floats
        narrow to ints, numbers become strings for a string feature. Non-finite floats are
        refused: they cannot be written as JSON and usually mean a broken upstream job.
        """
        if name not in self.defaults:
            raise ValueError(f"{name!r} is not a declared feature of {self.entity!r}")
        return coerce(value, self.kind(name))

    def __hash__(self) -> int:
        return hash((self.entity, tuple(self.defaults.items())))

    def __repr__(self) -> str:
        return f"FeatureTable(entity={self.entity!r}, defaults={dict(self.defaults)!r})"


def coerce(value: object, kind: type[Value]) -> Value:
    """Convert ``value`` to ``kind``; raise ``ValueError`` with a reason a person can act on."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a number or a string")
    if kind is str:
        return value if isinstance(value, str) else repr(value)
    number = _number(value) if isinstance(value, str) else value
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    if kind is float:
        return float(number)
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        return int(number)
    return number


def _number(text: str) -> int | float:
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        return float(stripped)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
