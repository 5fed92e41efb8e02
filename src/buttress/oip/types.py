"""The documents of the Open Inference Protocol (KServe V2) over REST, as pydantic models.

Only the parts buttress reads or writes: inference requests and responses with their tensors,
model metadata. Unknown keys are ignored, as the protocol allows extensions to add them.
Tensor ``data`` is kept as parsed JSON and handed to NumPy whole (see ``codec``): validating
it element by element in pydantic would cost more than the model call for a batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DATATYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(dtype) for name, dtype in (
        ("BOOL", np.bool_), ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32),
        ("UINT64", np.uint64), ("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32),
        ("INT64", np.int64), ("FP16", np.float16), ("FP32", np.float32), ("FP64", np.float64),
    )
}
"""OIP tensor datatypes buttress reads and writes (``BYTES`` is not one: models take numbers)."""

_DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}


def datatype_of(dtype: np.dtype[Any] | str) -> str:
    """The OIP datatype of a NumPy dtype (``float32`` -> ``FP32``); ``ValueError`` if none."""
    name = _DATATYPE_OF.get(np.dtype(dtype))
    if name is None:
        raise ValueError(f"no Open Inference Protocol datatype for NumPy dtype {dtype}")
    return name


def dtype_of(datatype: str) -> np.dtype[Any]:
    """The NumPy dtype of an OIP datatype; ``ValueError`` naming the supported ones."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise ValueError(f"datatype {datatype!r} is not supported; use one of "
                         f"{', '.join(DATATYPES)}")
    return dtype


class _Document(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class Tensor(_Document):
    """An input of a request or an output of a response."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestedOutput(_Document):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(_Document):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[Tensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class InferenceResponse(_Document):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    outputs: list[Tensor] = Field(min_length=1)


class TensorMetadata(_Document):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_Document):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str = ""
    inputs: list[TensorMetadata] = Field(default_factory=list)
    outputs: list[TensorMetadata] = Field(default_factory=list)
