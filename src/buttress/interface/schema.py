"""The compiled view of one Input class, and the two-tier lenient parser built on it.

See :mod:`buttress.interface` for the why. This module holds the how: finding the deepest
field with a default for each pydantic error, re-validating the patched document, counting
aliases and unknown keys, capping JSON nesting without paying for it on normal bodies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any, get_args, get_origin

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import from_json

from buttress.interface.contract import (
    MAX_KEY_CHARS,
    MAX_UNKNOWN_KEYS_LISTED,
    UNKNOWN_FIELD,
    ContractViolation,
    InputRejected,
    ParsedInput,
)


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
    """The exact location, for events and error bodies; a client's over-long key is cut."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        key = part if len(part) <= MAX_KEY_CHARS else part[:MAX_KEY_CHARS] + "..."
        out += f".{key}" if out else key
    return out


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

    def __init__(self, model: type[BaseModel]) -> None:
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
            # Unknown keys fail this first attempt, so a clean body needs no walk looking for
            # them: they are found by the lenient path below, which only they and bad
            # fields pay for.
            value = self.model.model_validate_json(body, extra="forbid")
        except ValidationError as error:
            # Malformed JSON is one error, and only then is the list worth building: a body
            # of 60,000 unknown keys has 60,000 errors, ~150 ms to turn into dicts.
            if error.error_count() == 1 and (first := error.errors()[0])["type"] == "json_invalid":
                raise InputRejected(400, f"malformed JSON: {first['msg']}") from None
            return self._parse_leniently(body)
        return ParsedInput(value, self._renamed_in(body))

    def _parse_leniently(self, body: bytes) -> ParsedInput:
        """A body with unknown keys or bad fields: keep what can be kept, record the rest."""
        try:
            value = self.model.model_validate_json(body)
        except ValidationError as error:
            # pydantic's own parser: orjson rejects what it accepts (NaN, huge integers)
            return self._repair(from_json(body), error)
        violations = self._renamed_in(body)
        violations.extend(self._unknown_keys(value))
        return ParsedInput(value, violations)

    def _renamed_in(self, body: bytes) -> list[ContractViolation]:
        """Renamed keys, decoding the body only if one of the aliases occurs in it at all."""
        for needle in self.alias_needles:
            if needle in body:
                return list(self._renamed(from_json(body)))
        return []

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
                        _path(loc), self._label(loc), kind,
                        received="" if kind == "missing" else _json_type(detail["input"]),
                        message=detail["msg"]))
                    continue
                field_loc, info = owner
                container = _resolve(document, field_loc[:-1])
                if isinstance(container, dict):
                    received = _json_type(_pop_field(container, str(field_loc[-1]), info))
                    violations.append(ContractViolation(
                        _path(field_loc), self._label(field_loc), "defaulted",
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
                    yield ContractViolation(_path((*loc, alias)), self._label((*loc, alias)),
                                            "renamed", expected=name, received=alias)

    def _label(self, loc: Sequence[str | int]) -> str:
        """The metric label of a location: its path through the contract's declared fields
        (and aliases), list indices as ``[]``, cut at the first part the contract does not
        declare (a dict's key, a union member's tag), so a client cannot mint new labels."""
        out = ""
        model: type[BaseModel] | None = self.model
        for part in loc:
            if isinstance(part, int):
                out += "[]"
                continue
            info = None if model is None else (
                model.model_fields.get(part) or _field_by_alias(model, part))
            if info is None:
                break
            out += f".{part}" if out else part
            model, _ = _nested_model(info.annotation)
        return out or "(body)"

    def _unknown_keys(self, value: BaseModel) -> Iterator[ContractViolation]:
        """Report and drop keys the model does not declare (they must not reach a cache key).

        The first :data:`MAX_UNKNOWN_KEYS_LISTED` are listed by name; the rest are only
        counted, into one last violation: a body of 60,000 unknown keys costs a ``len`` per
        object here, not 60,000 violations, metric increments and event entries.
        """
        listed = MAX_UNKNOWN_KEYS_LISTED
        unlisted = 0
        stack: list[tuple[tuple[str | int, ...], BaseModel]] = [((), value)]
        while stack:
            loc, obj = stack.pop()
            extra = obj.__pydantic_extra__
            if extra:
                for key in list(islice(extra, listed)):
                    yield ContractViolation(_path((*loc, key)), UNKNOWN_FIELD, "unknown_key",
                                            received=_json_type(extra[key]))
                shown = min(listed, len(extra))
                listed -= shown
                unlisted += len(extra) - shown
                extra.clear()
            for name, is_list in self.nested.get(type(obj), ()):
                child = getattr(obj, name)
                if is_list:
                    stack.extend(((*loc, name, i), item) for i, item in enumerate(child or ())
                                 if isinstance(item, BaseModel))
                elif isinstance(child, BaseModel):
                    stack.append(((*loc, name), child))
        if unlisted:
            yield ContractViolation(
                "(more)", UNKNOWN_FIELD, "unknown_key", count=unlisted,
                message=f"{unlisted} more unknown keys, not listed (only the first "
                        f"{MAX_UNKNOWN_KEYS_LISTED} are)")


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


_SCHEMAS: dict[type[BaseModel], _Schema] = {}


def schema_of(model: type[BaseModel]) -> _Schema:
    """The compiled schema of ``model``. A cache of derived data about immutable classes,
    not mutable application state: two services sharing an Input class share its schema."""
    schema = _SCHEMAS.get(model)
    if schema is None:
        schema = _SCHEMAS[model] = _Schema(model)
    return schema
