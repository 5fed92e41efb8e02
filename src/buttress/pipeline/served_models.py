"""A built service's model stages as OIP models: metadata, readiness and inference.

Transport-free (``buttress.http.oip`` puts it on HTTP). The model name is the stage's name
and its one version the stage's ``version``. A client sends the model's input rows as one
tensor ``[rows, features]``, skipping the Input interface and the other stages, as clients
built for Triton, KServe or MLServer expect. The call goes through the stage's batcher (so
``/v2`` and ``/predict`` rows share batches) or else its runner, within the request's
deadline and the stage's timeout, and counts in the stage's breaker.

What is measured: the model latency histogram (per batch when batched, per call otherwise),
the batch metrics and the breaker gauge; each inference call is one event (its ``route``
names the ``/v2`` path, ``buttress.http.oip``). ``buttress_requests_total`` and the request
latency histogram describe ``/predict`` only.

Failures: :class:`OipError` (400 for a bad tensor, 404 for an unknown model or version), or
the model stage's own :class:`~buttress.pipeline.stage.StageFailed` with its failure's kind
(``buttress.http.oip`` answers 500, 503 or 504 for it). The call runs by the same rules as a
``/predict`` model stage (:meth:`StageRuntime.call_model`), except that there is no
fallback: it is a function of the Input, which ``/v2`` lacks.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import numpy as np

from buttress.oip.codec import encode_response, parse_request
from buttress.oip.errors import OipError
from buttress.oip.types import DATATYPES, datatype_of
from buttress.runners import Described, Signature

if TYPE_CHECKING:
    from buttress.pipeline.runtime import Runtime
    from buttress.pipeline.stage import StageRuntime

INPUT_NAME = "input-0"
OUTPUT_NAME = "output-0"
PLATFORM = "buttress"


class ServedModels:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._signatures: dict[str, tuple[object, Signature]] = {}

    def stage(self, name: str, version: str | None = None) -> StageRuntime:
        """The model stage called ``name``, looked up on each call (a hot swap may replace it)."""
        pipeline = self.runtime.pipeline
        if name not in pipeline.model_stages:
            known = ", ".join(sorted(pipeline.model_stages)) or "none"
            raise OipError(404, f"unknown model {name!r}; models: {known}")
        stage = pipeline.stages[name]
        if version is not None and version != stage.version:
            raise OipError(404, f"model {name!r} has version {stage.version!r}, "
                                f"not {version!r}")
        return stage

    def signature(self, stage: StageRuntime) -> Signature:
        """What the stage's runner says it takes, asked once per runner."""
        runner = stage.runner
        cached = self._signatures.get(stage.spec.name)
        if cached is None or cached[0] is not runner:
            signature = runner.signature() if isinstance(runner, Described) else Signature()
            cached = self._signatures[stage.spec.name] = (runner, signature)
        return cached[1]

    def ready(self, name: str, version: str | None = None) -> bool:
        self.stage(name, version)
        return self.runtime.ready and not self.runtime.draining

    def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        stage = self.stage(name, version)
        signature = self.signature(stage)
        return {
            "name": name,
            "versions": [stage.version],
            "platform": PLATFORM,
            "inputs": [{"name": INPUT_NAME, "datatype": _datatype(signature.input_dtype),
                        "shape": [-1, signature.features or -1]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": _datatype(signature.output_dtype),
                         "shape": list(signature.output_shape)}],
        }

    async def infer(self, name: str, version: str | None, body: bytes,
                    header_length: str | None, deadline_s: float) -> tuple[bytes, int | None]:
        """The response body and, when it uses the binary extension, its JSON header length."""
        stage = self.stage(name, version)
        try:
            request, arrays = parse_request(body, header_length)
        except ValueError as error:
            raise OipError(400, str(error)) from None
        rows = _rows(name, arrays)
        features = self.signature(stage).features
        if features is not None and rows.shape[1] != features:
            raise OipError(400, f"model {name!r} takes rows of {features} features; "
                                f"got {rows.shape[1]}")
        binary = bool(request.parameters.get("binary_data_output"))
        for wanted in request.outputs or ():
            if wanted.name != OUTPUT_NAME:
                raise OipError(400, f"model {name!r} has one output, {OUTPUT_NAME!r}; "
                                    f"not {wanted.name!r}")
            binary = binary or bool(wanted.parameters.get("binary_data"))
        deadline = asyncio.get_running_loop().time() + deadline_s
        live = stage.live  # one version for the call and the answer, whatever swaps meanwhile
        assert live is not None
        predictions = _as_tensor(name, await stage.call_model(live, rows, deadline), len(rows))
        return encode_response(model_name=name, model_version=live.version,
                               request_id=request.id, outputs=[(OUTPUT_NAME, predictions)],
                               binary=binary)


def _rows(name: str, arrays: list[np.ndarray]) -> np.ndarray:
    """The one input tensor as model rows: 2-D, floats (integers and booleans as float64)."""
    if len(arrays) != 1:
        raise OipError(400, f"model {name!r} takes one input tensor [rows, features]; "
                            f"got {len(arrays)}")
    rows = arrays[0]
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise OipError(400, f"model {name!r} takes a 2-D tensor [rows, features] with at "
                            f"least one row; got shape {list(rows.shape)}")
    if rows.dtype == np.float16:
        return rows.astype(np.float32)
    return rows if rows.dtype.kind == "f" else rows.astype(np.float64)


def _as_tensor(name: str, predictions: Any, rows: int) -> np.ndarray:
    array = np.asarray(predictions)
    if array.ndim == 0 or array.shape[0] != rows:
        raise OipError(500, f"model {name!r} returned shape {list(array.shape)} for {rows} rows")
    if array.dtype not in DATATYPES.values():
        try:
            array = array.astype(np.float64)
        except (ValueError, TypeError):
            raise OipError(500, f"model {name!r} returned {array.dtype} values, which have no "
                                "numeric OIP datatype") from None
    return array


def _datatype(dtype: str) -> str:
    try:
        return datatype_of(dtype)
    except (TypeError, ValueError):
        return "FP64"
