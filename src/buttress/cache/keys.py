"""Cache keys: equal inputs give equal keys, in every process and on every replica.

A key is the xxh3-128 hex digest of ``[namespace, scope, model_version]`` followed by a canonical
serialization of the (validated) payload. The model version is in the key, so after a rollback
the cache never answers with the other version's predictions.

Canonical serialization, cheapest first:

- A pydantic model whose own serializer is canonical is dumped by pydantic-core (~0.9 µs for a
  nested five-field model). Fields come out in declaration order, whatever the order in the
  request, and a float field holds ``1.0`` whether the JSON said ``1``, ``1.0`` or ``1.00``.
- The serializer is *not* canonical when the model (or a nested one) holds a mapping, ``Any``,
  ``Json``, a set, extra fields or a custom serializer: their order follows the input or the
  hash seed. Such models, checked once per class, are dumped to Python and written by orjson
  with sorted keys (~2 µs), sets sorted.
- Any other payload (the result of a ``Cache(key=...)`` callable, a plain dict) is written by
  orjson with sorted keys. Outside a model ``1`` and ``1.0`` are different JSON and different
  keys: narrow to validated fields, which already hold one type.

A payload orjson cannot write raises ``TypeError``: that is a declaration bug, not an outage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic_core import SchemaSerializer, to_jsonable_python
from xxhash import xxh3_128_hexdigest

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
# Core-schema node types whose serialized order is not a function of the value alone.
_UNORDERED_TYPES = frozenset({"dict", "any", "json", "set", "frozenset"})
_CUSTOM_SERIALIZERS = frozenset({"function-plain", "function-wrap"})
_MAX_PREFIXES = 64
_BIG_INTEGER = "Integer exceeds 64-bit range"  # orjson's message


def cache_key(namespace: str, scope: str, model_version: str, payload: object) -> str:
    """The key of ``payload`` in ``namespace``/``scope`` for ``model_version``."""
    return xxh3_128_hexdigest(_prefix(namespace, scope, model_version) + canonical_json(payload))


def canonical_json(payload: object) -> bytes:
    """Bytes equal for equal payloads, whatever their key order or float spelling in JSON."""
    cls: type = type(payload)
    # ``isinstance(x, BaseModel)`` goes through ABCMeta (~0.4 µs); a class attribute does not.
    serializer: SchemaSerializer | None = getattr(cls, "__pydantic_serializer__", None)
    if serializer is not None and serializer_is_canonical(cls):
        return serializer.to_json(payload)
    return _sorted_json(payload)


class KeyHasher:
    """Keys for one cache owner: the prefix per model version is built once, not per call,
    and so is the choice of serializer per payload class."""

    def __init__(
        self, namespace: str, scope: str, narrow: Callable[[Any], object] | None = None
    ) -> None:
        self.namespace = namespace
        self.scope = scope
        self._narrow = narrow
        self._prefixes: dict[str, bytes] = {}
        self._serializers: dict[type, Callable[[Any], bytes]] = {}

    def __call__(self, payload: object, model_version: str = "") -> str:
        if self._narrow is not None:
            payload = self._narrow(payload)
        prefix = self._prefixes.get(model_version)
        if prefix is None:
            if len(self._prefixes) >= _MAX_PREFIXES:
                self._prefixes.clear()
            prefix = self._prefixes[model_version] = _prefix(
                self.namespace, self.scope, model_version
            )
        serialize = self._serializers.get(type(payload))
        if serialize is None:
            serialize = self._serializer_for(type(payload))
        return xxh3_128_hexdigest(prefix + serialize(payload))

    def _serializer_for(self, cls: type) -> Callable[[Any], bytes]:
        serializer = getattr(cls, "__pydantic_serializer__", None)
        if serializer is not None and serializer_is_canonical(cls):
            serialize: Callable[[Any], bytes] = serializer.to_json
        else:
            serialize = _sorted_json
        if len(self._serializers) < _MAX_PREFIXES:
            self._serializers[cls] = serialize
        return serialize


# A memo of a pure function of the class (like ``re``'s pattern cache), not shared state:
# two services that share it get the same answers they would compute themselves.
@lru_cache(maxsize=256)
def serializer_is_canonical(cls: type) -> bool:
    """Does pydantic-core write every value of ``cls`` in one order? Checked once per class."""
    return not _has_unordered_part(getattr(cls, "__pydantic_core_schema__", {"type": "any"}))


def _sorted_json(payload: object) -> bytes:
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="python")
    try:
        return orjson.dumps(payload, default=_default, option=_SORTED)
    except TypeError as error:
        if str(error) != _BIG_INTEGER:
            raise
    # orjson writes no integer past 64 bits (a client's made-up id, say); Python's json does.
    # A payload holding one always comes here, so its key is the same on every replica.
    return json.dumps(payload, default=_default, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def _has_unordered_part(node: object) -> bool:
    if isinstance(node, dict):
        if node.get("type") in _UNORDERED_TYPES:
            return True
        if node.get("extra_behavior") == "allow" or node.get("extra_fields_behavior") == "allow":
            return True
        serialization = node.get("serialization")
        if isinstance(serialization, dict) and serialization.get("type") in _CUSTOM_SERIALIZERS:
            return True
        return any(_has_unordered_part(value) for value in node.values())
    if isinstance(node, list | tuple):
        return any(_has_unordered_part(value) for value in node)
    return False


def _prefix(namespace: str, scope: str, model_version: str) -> bytes:
    return orjson.dumps([namespace, scope, model_version])


def _default(value: object) -> object:
    if isinstance(value, set | frozenset):
        return sorted(value, key=lambda item: orjson.dumps(item, default=_default, option=_SORTED))
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python")
    try:
        return to_jsonable_python(value)
    except Exception as exc:  # pydantic's error type is not a TypeError; orjson wants one
        raise TypeError(f"cannot build a cache key from {type(value).__name__}: {exc}") from exc
