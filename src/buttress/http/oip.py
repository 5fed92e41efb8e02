"""The Open Inference Protocol routes under ``/v2`` (KServe V2 REST), on Starlette.

Health follows the runtime (``/v2/health/ready`` is ``/readyz``: 503 while starting or
draining; the protocol says a 4xx, but every client checks for 200 and load balancers expect
503). Models are the service's model stages; see :mod:`buttress.oip.serving` for what an
inference does and which status each failure gets. Bodies are capped at ``max_body_bytes``
like ``/predict``; ``X-Deadline-Ms`` lowers the deadline the same way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buttress import __version__
from buttress.http.body import read_body
from buttress.oip.codec import HEADER_LENGTH
from buttress.oip.errors import OipError
from buttress.oip.serving import PLATFORM, ServedModels

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from buttress.runtime import Runtime

    Handler = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("buttress.oip")


def oip_routes(runtime: Runtime) -> list[Route]:
    models = ServedModels(runtime)
    max_body = runtime.settings.max_body_bytes

    def is_ready() -> bool:
        return runtime.ready and not runtime.draining

    async def server_metadata(request: Request) -> Response:
        return _json({"name": PLATFORM, "version": __version__,
                      "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        ok = is_ready()
        return _json({"ready": ok}, 200 if ok else 503)

    async def model_metadata(request: Request) -> Response:
        return _json(models.metadata(*_model(request)))

    async def model_ready(request: Request) -> Response:
        ok = models.ready(*_model(request))
        return _json({"name": request.path_params["name"], "ready": ok}, 200 if ok else 503)

    async def infer(request: Request) -> Response:
        body = await _read_body(request, max_body)
        deadline = runtime.deadline_for(request.headers.get("x-deadline-ms"))
        answer, header_length = await models.infer(
            *_model(request), body, request.headers.get(HEADER_LENGTH), deadline)
        if header_length is None:
            return Response(answer, media_type="application/json")
        return Response(answer, media_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(header_length)})

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return [
        Route("/v2", _answering(server_metadata), methods=["GET"]),
        Route("/v2/health/live", _answering(live), methods=["GET"]),
        Route("/v2/health/ready", _answering(ready), methods=["GET"]),
        *(route for path in (model, versioned) for route in (
            Route(path, _answering(model_metadata), methods=["GET"]),
            Route(f"{path}/ready", _answering(model_ready), methods=["GET"]),
            Route(f"{path}/infer", _answering(infer), methods=["POST"]),
        )),
    ]


def _model(request: Request) -> tuple[str, str | None]:
    return request.path_params["name"], request.path_params.get("version")


def _answering(handler: Handler) -> Handler:
    """``handler`` with an :class:`OipError` answered as ``{"error": message}``."""

    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except OipError as error:
            return _json({"error": error.message}, error.status)
        except Exception as error:  # a bug: answer in the protocol's format, log, carry on
            log.exception("%s %s failed", request.method, request.url.path)
            return _json({"error": f"internal error: {type(error).__name__}"}, 500)

    return answer


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    body = None if declared.isdigit() and int(declared) > limit else await read_body(
        request.receive, limit)
    if body is None:
        raise OipError(413, f"body larger than {limit} bytes")
    return body


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")
