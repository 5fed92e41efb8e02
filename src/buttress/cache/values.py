"""Cached values travel as compact JSON (orjson), on every backend, never as pickle.

JSON because a cache shared by replicas must never run code on load (pickle would), and
because one encoding on every backend means a value comes back the same from ``memory://``
and from ``redis://``: the memory backend stores the bytes too, which also keeps a caller that
mutates its answer from changing the cached one.

What comes back: dicts, lists, strings, numbers, booleans and ``None``. Tuples and numpy arrays
come back as lists; NaN and infinities as ``None``. Pydantic models are not accepted: pass
``model.model_dump(mode="json")`` and validate again on the way out if you need the model.
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def encode_value(value: Any) -> bytes:
    """JSON bytes of ``value``; ``TypeError`` when it is not JSON data."""
    return orjson.dumps(value, option=_OPTIONS)


def decode_value(raw: bytes) -> Any:
    """The value ``raw`` was encoded from; ``ValueError`` on bytes that are not JSON."""
    return orjson.loads(raw)
