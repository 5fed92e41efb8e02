"""NumPy arrays to and from OIP tensors: JSON ``data``, or the binary tensor data extension.

The binary extension (Triton's, used by ``tritonclient`` by default) sends a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw little-endian tensors, each one
announced by ``parameters.binary_data_size``. A response uses it when the request asks for it
(``parameters.binary_data_output`` for all outputs, or ``binary_data`` on one output).

Hand-written because the maintained codecs live inside servers (MLServer, KServe) or clients
(tritonclient) and pull in their stacks; this is a few dozen lines on NumPy and orjson.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import ValidationError

from buttress.oip.types import InferenceRequest, InferenceResponse, Tensor, datatype_of, dtype_of

HEADER_LENGTH = "inference-header-content-length"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class TensorError(ValueError):
    """A document or tensor that cannot be decoded: the client's fault (HTTP 400)."""


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary tail of a body (the tail is empty without the extension)."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise TensorError(f"bad Inference-Header-Content-Length {header_length!r}") from None
    if not 0 <= length <= len(body):
        raise TensorError(f"Inference-Header-Content-Length {length} is outside the body "
                          f"of {len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def parse_request(body: bytes, header_length: str | None = None) -> tuple[InferenceRequest,
                                                                           list[np.ndarray]]:
    """An inference request and its input tensors as arrays, in order."""
    request, tail = _parse_header(InferenceRequest, body, header_length)
    return request, decode_tensors(request.inputs, tail)


def parse_response(body: bytes, header_length: str | None = None) -> tuple[InferenceResponse,
                                                                            list[np.ndarray]]:
    """An inference response and its output tensors as arrays, in order."""
    response, tail = _parse_header(InferenceResponse, body, header_length)
    return response, decode_tensors(response.outputs, tail)


Message = TypeVar("Message", InferenceRequest, InferenceResponse)


def _parse_header(
    kind: type[Message], body: bytes, header_length: str | None
) -> tuple[Message, memoryview]:
    """The JSON header as ``kind`` and the binary tail after it."""
    header, tail = split_body(body, header_length)
    try:
        return kind.model_validate_json(header), tail
    except ValidationError as error:
        raise TensorError(_explain(error)) from None


def decode_tensors(tensors: Sequence[Tensor], tail: memoryview) -> list[np.ndarray]:
    arrays = []
    offset = 0
    for tensor in tensors:
        array, offset = decode_tensor(tensor, tail, offset)
        arrays.append(array)
    if offset != len(tail):
        raise TensorError(f"{len(tail) - offset} bytes of binary data belong to no tensor")
    return arrays


def decode_tensor(tensor: Tensor, tail: memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """One tensor as an array of its shape and datatype, and the offset past its binary data."""
    try:
        dtype = dtype_of(tensor.datatype)
    except ValueError as error:
        raise TensorError(f"tensor {tensor.name!r}: {error}") from None
    if any(d < 0 for d in tensor.shape):
        raise TensorError(f"tensor {tensor.name!r}: shape {tensor.shape} has a negative size")
    size = math.prod(tensor.shape)
    binary_size = tensor.parameters.get("binary_data_size")
    if binary_size is not None:
        end = offset + int(binary_size)
        if binary_size != size * dtype.itemsize or end > len(tail):
            raise TensorError(f"tensor {tensor.name!r}: {binary_size} bytes of binary data do "
                              f"not hold shape {tensor.shape} of {tensor.datatype}")
        flat = np.frombuffer(tail[offset:end], dtype=dtype.newbyteorder("<")).astype(dtype)
        return flat.reshape(tensor.shape), end
    if tensor.data is None:
        raise TensorError(f"tensor {tensor.name!r} has neither data nor binary_data_size")
    try:
        array = np.asarray(tensor.data, dtype=dtype)
    except (ValueError, TypeError) as error:
        raise TensorError(f"tensor {tensor.name!r}: data is not {tensor.datatype}: "
                          f"{error}") from None
    if array.size != size:
        raise TensorError(f"tensor {tensor.name!r}: {array.size} values do not fill shape "
                          f"{tensor.shape}")
    return array.reshape(tensor.shape), offset


def encode_tensor(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes]:
    """The JSON of one tensor and its binary data (empty unless ``binary``)."""
    document: dict[str, Any] = {"name": name, "shape": list(array.shape),
                                "datatype": datatype_of(array.dtype)}
    if binary:
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        document["parameters"] = {"binary_data_size": len(raw)}
        return document, raw
    document["data"] = np.ascontiguousarray(array).ravel()
    return document, b""


def encode_request(rows: np.ndarray, *, input_name: str, output_name: str | None = None,
                   request_id: str | None = None) -> bytes:
    """A JSON inference request with ``rows`` as its one input (what the remote runner sends)."""
    tensor, _ = encode_tensor(input_name, rows, binary=False)
    document: dict[str, Any] = {"inputs": [tensor]}
    if request_id is not None:
        document["id"] = request_id
    if output_name is not None:
        document["outputs"] = [{"name": output_name}]
    return orjson.dumps(document, option=_NUMPY)


def encode_response(*, model_name: str, model_version: str, request_id: str | None,
                    outputs: Sequence[tuple[str, np.ndarray]],
                    binary: bool) -> tuple[bytes, int | None]:
    """A response body and, with the binary extension, the length of its JSON header."""
    tensors, blobs = [], []
    for name, array in outputs:
        tensor, raw = encode_tensor(name, array, binary)
        tensors.append(tensor)
        blobs.append(raw)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version,
                                "outputs": tensors}
    if request_id is not None:
        document["id"] = request_id
    header = orjson.dumps(document, option=_NUMPY)
    if not binary:
        return header, None
    return header + b"".join(blobs), len(header)


def _explain(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"bad inference document at {where}: {first['msg']}{more}"
