"""An asyncio client for OIP servers (buttress, MLServer, KServe, Triton) over REST.

One pooled ``httpx.AsyncClient`` per client: bounded connections kept alive between calls
(a new TCP connection per batch would cost more than the model call), and one explicit
timeout for connecting, writing, waiting for a pooled connection and reading. It speaks JSON
tensors, which every OIP server accepts. Transport failures surface as ``httpx`` errors, an
error answer as :class:`~buttress.oip.errors.OipError`, an unreadable answer as
:class:`~buttress.oip.codec.TensorError`: the remote runner sorts them for its breaker.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import numpy as np
import orjson

from buttress.oip.codec import HEADER_LENGTH, encode_request, parse_response
from buttress.oip.errors import OipError
from buttress.oip.types import ModelMetadata

_JSON = {"content-type": "application/json"}


class OipClient:
    def __init__(self, url: str, *, timeout: float, max_connections: int = 16,
                 keepalive_expiry: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=httpx.Timeout(timeout), transport=transport,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections,
                                keepalive_expiry=keepalive_expiry))

    async def infer(self, model: str, rows: np.ndarray, *, version: str | None = None,
                    input_name: str = "input-0", output_name: str | None = None) -> np.ndarray:
        """Send ``rows`` as the model's one input; return the named (or first) output."""
        body = encode_request(rows, input_name=input_name, output_name=output_name)
        response = await self._http.post(f"{_model_path(model, version)}/infer", content=body,
                                         headers=_JSON)
        _raise_for_error(response)
        document, arrays = parse_response(response.content, response.headers.get(HEADER_LENGTH))
        if output_name is None:
            return arrays[0]
        for tensor, array in zip(document.outputs, arrays, strict=True):
            if tensor.name == output_name:
                return array
        names = ", ".join(t.name for t in document.outputs)
        raise OipError(response.status_code, f"no output {output_name!r} in the answer ({names})")

    async def server_ready(self) -> bool:
        return (await self._http.get("/v2/health/ready")).status_code == 200

    async def model_ready(self, model: str, version: str | None = None) -> bool:
        return (await self._http.get(f"{_model_path(model, version)}/ready")).status_code == 200

    async def model_metadata(self, model: str, version: str | None = None) -> ModelMetadata:
        response = await self._http.get(_model_path(model, version))
        _raise_for_error(response)
        return ModelMetadata.model_validate_json(response.content)

    async def aclose(self) -> None:
        await self._http.aclose()


def _model_path(model: str, version: str | None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return path if version is None else f"{path}/versions/{quote(version, safe='')}"


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    try:
        message = str(orjson.loads(response.content)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    raise OipError(response.status_code, message)
