"""The input interface: typed request models that absorb contract changes and say so.

A producer renames ``margin`` to ``seller_margin``, sends ``"abc"`` where a number belongs, or
adds keys nobody asked for. The service should keep answering, and an operator should see it
happen. So an :class:`Input` model is validated in two tiers:

* **Fast path**: ``model_validate_json(body)``; renamed keys are accepted through aliases.
  Nothing else is paid on a clean request except a ``bytes`` search per declared alias and a
  walk over nested models for unknown keys.
* **Failure path** (only when pydantic raises): every error is traced to the deepest field on
  its path that has a default. That field takes its default and a :class:`ContractViolation`
  records the path, the expected type and the received type; errors with no default on their
  path are fatal and reported together (422). pydantic-core's ``on_error='default'`` would do
  the substitution silently; the record is the point, so we re-validate the patched document.

This module depends on pydantic only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, get_args, get_origin

from annotated_types import MaxLen
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, from_json

DEFAULT_MAX_LIST_ITEMS = 1000
DEFAULT_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class ContractViolation:
    """One way a request broke the input contract.

    ``kind`` is one of ``defaulted`` (bad value replaced by the field's default), ``renamed``
    (the value arrived under an alias), ``unknown_key`` (a key the model does not declare),
    ``missing`` and ``invalid`` (required field absent or unusable: the request is refused).
    ``path`` is exact (``sub_orders[3].margin``); ``field`` drops list indices so it can be a
    metric label of bounded cardinality (``sub_orders[].margin``).
    """

    path: str
    field: str
    kind: str
    expected: str = ""
    received: str = ""
    message: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "field": self.path,
            "kind": self.kind,
            "expected": self.expected,
            "received": self.received,
            "message": self.message,
        }


class InputRejected(Exception):
    """The request cannot be served: ``status`` is 400, 413 or 422."""

    def __init__(
        self, status: int, message: str, violations: Sequence[ContractViolation] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.violations = list(violations)


@dataclass(slots=True)
class ParsedInput:
    value: Input
    violations: list[ContractViolation]

    @property
    def defaulted(self) -> bool:
        return any(v.kind == "defaulted" for v in self.violations)


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
    works). ``constraints`` are pydantic's (``ge``, ``max_length``, ``pattern``...).
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
    """Base class of request models. Subclass it like a pydantic model."""

    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True)

    max_list_items: ClassVar[int] = DEFAULT_MAX_LIST_ITEMS
    """Lists declared without ``max_length`` get this one, so no list is unbounded."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if _cap_unbounded_lists(cls):
            cls.model_rebuild(force=True)

    @classmethod
    def parse(cls, body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> ParsedInput:
        """Validate raw JSON bytes leniently; raise :class:`InputRejected` when impossible."""
        return _schema_of(cls).parse(body, max_depth)

    @classmethod
    def parse_object(cls, document: Any) -> ParsedInput:
        """Validate an already-decoded JSON document (e.g. a message from a queue)."""
        return _schema_of(cls).parse_document(document)


class Output(BaseModel):
    """Base class of response models."""

    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


def _cap_unbounded_lists(cls: type[BaseModel]) -> bool:
    changed = False
    for info in cls.model_fields.values():
        if get_origin(info.annotation) is list and not any(
            isinstance(m, MaxLen) for m in info.metadata
        ):
            info.metadata.append(MaxLen(getattr(cls, "max_list_items", DEFAULT_MAX_LIST_ITEMS)))
            changed = True
    return changed


# --- the compiled view of one Input class ---------------------------------------------------


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model class, is_list) when the annotation is a model or a list/optional of models."""
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin is list:
        inner, _ = _nested_model(get_args(annotation)[0])
        return inner, True
    for arg in get_args(annotation):  # Optional[Model], Model | None
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg, False
    return None, False


def _aliases_of(info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [a for a in alias.choices if isinstance(a, str)]
    return [alias] if isinstance(alias, str) else []


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation).replace("typing.", "")


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _label(loc: Sequence[str | int]) -> str:
    return re.sub(r"\[\d+\]", "[]", _path(loc))


_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _depth(body: bytes) -> int:
    depth = deepest = 0
    for match in _STRUCTURE.finditer(body):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"}", b"]"):
            depth -= 1
    return deepest


class _Schema:
    """What the parser needs to know about one Input class, computed once per class."""

    def __init__(self, model: type[Input]) -> None:
        self.model = model
        # Every (path to the owning object, alias, field name); path uses "[]" for list items.
        self.aliases: list[tuple[tuple[str, ...], str, str]] = []
        self.alias_needles: list[bytes] = []
        # Per model class: its fields holding nested models (name, is_list).
        self.nested: dict[type[BaseModel], list[tuple[str, bool]]] = {}
        self._collect(model, ())
        self.alias_needles = sorted({f'"{a}"'.encode() for _, a, _ in self.aliases})

    def _collect(self, model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        if model in self.nested:
            return
        self.nested[model] = []
        for name, info in model.model_fields.items():
            for alias in _aliases_of(info):
                self.aliases.append((prefix, alias, name))
            inner, is_list = _nested_model(info.annotation)
            if inner is not None:
                self.nested[model].append((name, is_list))
                self._collect(inner, (*prefix, name, *(("[]",) if is_list else ())))

    # -- parsing ---------------------------------------------------------------------------

    def parse(self, body: bytes, max_depth: int) -> ParsedInput:
        if len(body) > max_depth and (
            body.count(b"{") + body.count(b"[") > max_depth and _depth(body) > max_depth
        ):
            raise InputRejected(400, f"JSON nesting deeper than {max_depth} levels")
        try:
            value = self.model.model_validate_json(body)
            violations: list[ContractViolation] = []
        except ValidationError as error:
            if any(e["type"] == "json_invalid" for e in error.errors()):
                raise InputRejected(400, f"malformed JSON: {error.errors()[0]['msg']}") from None
            # pydantic's own parser: orjson rejects what it accepts (NaN, huge integers)
            return self._repair(from_json(body), error)
        for needle in self.alias_needles:
            if needle in body:
                violations.extend(self._renamed(from_json(body)))
                break
        unknown = self._unknown_keys(value)
        if unknown:
            violations.extend(unknown)
        return ParsedInput(value, violations)

    def parse_document(self, document: Any) -> ParsedInput:
        try:
            value = self.model.model_validate(document)
        except ValidationError as error:
            return self._repair(document, error)
        violations = list(self._renamed(document)) + list(self._unknown_keys(value))
        return ParsedInput(value, violations)

    def _repair(self, document: Any, first_error: ValidationError) -> ParsedInput:
        """Replace every bad field that has a default; refuse if any error has none."""
        if not isinstance(document, dict):
            raise InputRejected(422, "the request body must be a JSON object", [
                ContractViolation("(body)", "(body)", "invalid", "object", _json_type(document),
                                  "the request body must be a JSON object")])
        violations: list[ContractViolation] = []
        error: ValidationError | None = first_error
        for _attempt in range(3):
            assert error is not None
            fatal: list[ContractViolation] = []
            for detail in error.errors():
                loc = tuple(detail["loc"])
                owner = self._deepest_defaulted(loc)
                if owner is None:
                    kind = "missing" if detail["type"] == "missing" else "invalid"
                    fatal.append(ContractViolation(
                        _path(loc), _label(loc), kind,
                        received="" if kind == "missing" else _json_type(detail["input"]),
                        message=detail["msg"]))
                    continue
                field_loc, info = owner
                container = _resolve(document, field_loc[:-1])
                if isinstance(container, dict):
                    received = _json_type(_pop_field(container, str(field_loc[-1]), info))
                    violations.append(ContractViolation(
                        _path(field_loc), _label(field_loc), "defaulted",
                        expected=_type_name(info.annotation), received=received,
                        message=detail["msg"]))
            if fatal:
                raise InputRejected(422, "the request does not match the input contract",
                                    _unique(fatal + violations))
            try:
                value = self.model.model_validate(document)
                error = None
                break
            except ValidationError as again:
                error = again
        if error is not None:
            raise InputRejected(422, "the request does not match the input contract")
        violations = _unique(violations)
        violations.extend(self._renamed(document))
        violations.extend(self._unknown_keys(value))
        return ParsedInput(value, violations)

    def _deepest_defaulted(
        self, loc: tuple[str | int, ...]
    ) -> tuple[tuple[str | int, ...], FieldInfo] | None:
        """The deepest field along ``loc`` that has a default, with its own location."""
        found: tuple[tuple[str | int, ...], FieldInfo] | None = None
        model: type[BaseModel] | None = self.model
        for index, part in enumerate(loc):
            if model is None:
                break
            if isinstance(part, int):
                continue
            info = model.model_fields.get(part) or _field_by_alias(model, part)
            if info is None:
                break
            if not info.is_required():
                found = (loc[: index + 1], info)
            model, _ = _nested_model(info.annotation)
        return found

    def _renamed(self, document: Any) -> Iterator[ContractViolation]:
        for prefix, alias, name in self.aliases:
            for loc, obj in _objects_at(document, prefix, ()):
                if alias in obj:
                    yield ContractViolation(_path((*loc, alias)), _label((*loc, alias)),
                                            "renamed", expected=name, received=alias)

    def _unknown_keys(self, value: BaseModel) -> list[ContractViolation]:
        """Report and drop keys the model does not declare (they must not reach a cache key).

        The common case has none, so a cheap walk looks first and the detailed one runs only
        when it found something."""
        stack: list[BaseModel] = [value]
        while stack:
            obj = stack.pop()
            if obj.__pydantic_extra__:
                return list(self._report_unknown_keys(value))
            for name, is_list in self.nested.get(type(obj), ()):
                child = getattr(obj, name)
                if is_list:
                    stack.extend(child or ())
                elif child is not None:
                    stack.append(child)
        return []

    def _report_unknown_keys(self, value: BaseModel) -> Iterator[ContractViolation]:
        stack: list[tuple[tuple[str | int, ...], BaseModel]] = [((), value)]
        while stack:
            loc, obj = stack.pop()
            extra = obj.__pydantic_extra__
            if extra:
                for key, raw in extra.items():
                    yield ContractViolation(_path((*loc, key)), _label((*loc, key)),
                                            "unknown_key", received=_json_type(raw))
                extra.clear()
            for name, is_list in self.nested.get(type(obj), ()):
                child = getattr(obj, name)
                if is_list:
                    stack.extend(((*loc, name, i), item) for i, item in enumerate(child or ())
                                 if isinstance(item, BaseModel))
                elif isinstance(child, BaseModel):
                    stack.append(((*loc, name), child))


def _field_by_alias(model: type[BaseModel], key: str) -> FieldInfo | None:
    for info in model.model_fields.values():
        if key in _aliases_of(info):
            return info
    return None


def _pop_field(container: dict[str, Any], name: str, info: FieldInfo) -> Any:
    """Remove a field under its name and all its aliases; return the first value removed."""
    removed: Any = None
    for key in (name, *_aliases_of(info)):
        if key in container:
            value = container.pop(key)
            removed = value if removed is None else removed
    return removed


def _resolve(document: Any, loc: Sequence[str | int]) -> Any:
    node = document
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _objects_at(
    node: Any, prefix: tuple[str, ...], loc: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    if not prefix:
        if isinstance(node, dict):
            yield loc, node
        return
    head, rest = prefix[0], prefix[1:]
    if head == "[]":
        if isinstance(node, list):
            for i, item in enumerate(node):
                yield from _objects_at(item, rest, (*loc, i))
    elif isinstance(node, dict) and head in node:
        yield from _objects_at(node[head], rest, (*loc, head))


def _unique(violations: list[ContractViolation]) -> list[ContractViolation]:
    seen: dict[tuple[str, str], ContractViolation] = {}
    for violation in violations:
        seen.setdefault((violation.path, violation.kind), violation)
    return list(seen.values())


_SCHEMAS: dict[type[Input], _Schema] = {}


def _schema_of(model: type[Input]) -> _Schema:
    """The compiled schema of ``model``. A cache of derived data about immutable classes,
    not mutable application state: two services sharing an Input class share its schema."""
    schema = _SCHEMAS.get(model)
    if schema is None:
        schema = _SCHEMAS[model] = _Schema(model)
    return schema


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON schema of ``model`` under its field names (aliases listed in each description)."""
    return model.model_json_schema(by_alias=False, ref_template="#/components/schemas/{model}")

