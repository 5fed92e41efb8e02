"""The input interface: typed request models that absorb contract changes and say so.

A producer renames ``margin`` to ``seller_margin``, sends ``"abc"`` where a number belongs, or
adds keys nobody asked for. The service should keep answering, and an operator should see it
happen. So an :class:`Input` model is validated in two tiers:

* **Fast path**: ``model_validate_json(body, extra="forbid")``; renamed keys are accepted
  through aliases. Nothing else is paid on a clean request except a ``bytes`` search per
  declared alias. Unknown keys fail this attempt, and a second one that allows them keeps
  the value and reports the keys (so only bodies that have some pay for finding them): the
  first 20 by name, the rest as a count, all under one metric label (``field="<unknown>"``).
* **Failure path** (only when pydantic raises): every error is traced to the deepest field on
  its path that has a default. That field takes its default and a :class:`ContractViolation`
  records the path, the expected type and the received type; errors with no default on their
  path are fatal and reported together (422). pydantic-core's ``on_error='default'`` would do
  the substitution silently; the record is the point, so we re-validate the patched document.

This module and its helpers (:mod:`buttress.interface.contract`, :mod:`buttress.interface.schema`)
depend on pydantic only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin

from annotated_types import MaxLen
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, Strict
from pydantic_core import PydanticUndefined

from buttress.interface.contract import ContractViolation, InputRejected, ParsedInput
from buttress.interface.schema import schema_of

__all__ = ["ContractViolation", "Input", "InputRejected", "Output", "ParsedInput", "field"]

DEFAULT_MAX_LIST_ITEMS = 1000
DEFAULT_MAX_DEPTH = 64


def field(
    default: Any = PydanticUndefined,
    *,
    aliases: Sequence[str] = (),
    default_factory: Any = None,
    description: str | None = None,
    **constraints: Any,
) -> Any:
    """Declare a field of an :class:`Input` or :class:`Output` model.

    ``aliases`` are other names the same value may arrive under (the field's own name always
    works). ``constraints`` are pydantic's (``ge``, ``max_length``, ``pattern``,
    ``allow_inf_nan``...).
    """
    validation_alias = AliasChoices(*aliases) if aliases else None
    if default_factory is not None:
        return Field(
            default_factory=default_factory,
            validation_alias=validation_alias,
            description=description,
            **constraints,
        )
    return Field(
        default, validation_alias=validation_alias, description=description, **constraints
    )


class Input(BaseModel):
    """Base class of request models. Subclass it like a pydantic model.

    ``int`` and ``float`` fields take JSON numbers only: ``true``, ``false`` and ``"42"`` are
    wrong types (pydantic's lax mode would read them as 1, 0 and 42 without a word), so they
    take the field's default with a recorded violation, or make a 422 naming the field.
    Float fields refuse ``NaN``, ``Infinity`` and numbers that overflow to infinity
    (``1e400``): such a value fails like a wrong type (the field's default with a recorded
    violation, or a 422 naming the field), so it never reaches a model, a guardrail's sum or
    a cache key. A model that must accept them opts in for the whole class
    (``class Reading(bt.Input, allow_inf_nan=True)``) or for one field
    (``bt.field(allow_inf_nan=True)``). Ranges are the class's to declare:
    ``price: float = bt.field(ge=0)``.
    """

    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True,
                              allow_inf_nan=False)

    max_list_items: ClassVar[int] = DEFAULT_MAX_LIST_ITEMS
    """Lists declared without ``max_length`` get this one, so no list is unbounded."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        capped = _cap_unbounded_lists(cls)
        if _numbers_are_numbers(cls) or capped:
            cls.model_rebuild(force=True)

    @classmethod
    def parse(cls, body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> ParsedInput:
        """Validate raw JSON bytes leniently; raise :class:`InputRejected` when impossible."""
        return schema_of(cls).parse(body, max_depth)

    @classmethod
    def parser(cls, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Callable[[bytes], ParsedInput]:
        """``parse`` with its settings bound once, for a caller that parses every request."""
        return partial(schema_of(cls).parse, max_depth=max_depth)

    @classmethod
    def parse_object(cls, document: Any) -> ParsedInput:
        """Validate an already-decoded JSON document (e.g. a message from a queue)."""
        return schema_of(cls).parse_document(document)


class Output(BaseModel):
    """Base class of response models."""

    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


_NUMBERS = (int, float)


def _numbers_are_numbers(cls: type[BaseModel]) -> bool:
    """Mark the class's ``int``/``float`` fields (optional ones too) strict: JSON numbers only."""
    changed = False
    for info in cls.model_fields.values():
        annotation = info.annotation
        kinds = [a for a in get_args(annotation) if a is not type(None)] if (
            get_origin(annotation) in (Union, UnionType)) else [annotation]
        if kinds and all(kind in _NUMBERS for kind in kinds) and not any(
                isinstance(m, Strict) for m in info.metadata):
            info.metadata.append(Strict())
            changed = True
    return changed


def _cap_unbounded_lists(cls: type[BaseModel]) -> bool:
    changed = False
    for info in cls.model_fields.values():
        if get_origin(info.annotation) is list and not any(
            isinstance(m, MaxLen) for m in info.metadata
        ):
            info.metadata.append(MaxLen(getattr(cls, "max_list_items", DEFAULT_MAX_LIST_ITEMS)))
            changed = True
    return changed
