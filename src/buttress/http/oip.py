"""The Open Inference Protocol routes under ``/v2`` (KServe V2 REST), on Starlette.

Health follows the runtime (``/v2/health/ready`` is ``/readyz``: 503 while starting or
draining; the protocol says a 4xx, but every client checks for 200 and load balancers expect
503). Models are the service's model stages; see :mod:`buttress.pipeline.served_models` for what an
inference does and which status each failure gets. Bodies are capped at ``max_body_bytes``
like ``/predict``; ``X-Deadline-Ms`` lowers the deadline the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buttress import __version__
from buttress.http.body import ReadTimedOut, read_request_body
from buttress.http.request_ids import RequestIds
from buttress.oip.codec import HEADER_LENGTH
from buttress.oip.errors import OipError
from buttress.pipeline.context import RequestContext
from buttress.pipeline.served_models import PLATFORM, ServedModels
from buttress.pipeline.stage import StageFailed
from buttress.resilience.categories import Category
from buttress.resilience.deadline import InvalidDeadline
from buttress.resilience.failures import Failure

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from buttress.pipeline.runtime import Runtime

    Handler = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("buttress.oip")


_STATUS_OF_FAILURE = {Failure.ERROR: 500, Failure.UNAVAILABLE: 503, Failure.TIMEOUT: 504}
"""The status of a model call's failure, by its kind (its category comes with it)."""


def oip_routes(runtime: Runtime) -> list[Route]:
    models = ServedModels(runtime)
    ids = RequestIds()
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
        """An inference call, answered or refused, recorded as one event (its route says it
        came through ``/v2``); it is not a ``/predict`` request, so not in their metrics."""
        clock = time.perf_counter()
        name, version = _model(request)
        now = asyncio.get_running_loop().time()
        try:
            budget = runtime.deadline_for(request.headers.get("x-deadline-ms"))
        except InvalidDeadline as invalid:
            raise OipError(400, str(invalid)) from None
        ctx = RequestContext(ids.pick(request.headers.get("x-request-id", "").encode()),
                             now, now + budget)
        status: int | None = None  # stays None if the call is cancelled: nothing was served
        try:
            body = await _read_body(request, max_body)
            answer, header_length = await models.infer(
                name, version, body, request.headers.get(HEADER_LENGTH), budget)
            status = 200
            ctx.model_version = models.stage(name, version).version
        except OipError as error:
            status = error.status
            ctx.fail(name, Category.INPUT_INVALID if status < 500 else Category.MODEL_ERROR,
                     error.message)
            raise
        except StageFailed as failed:
            status = _STATUS_OF_FAILURE[failed.failure]
            ctx.fail(name, failed.category, str(failed))
            raise OipError(status, str(failed)) from None
        except Exception as error:
            status = 500
            ctx.fail(name, Category.INTERNAL, type(error).__name__)
            raise
        finally:
            if status is not None:
                runtime.record_event(ctx, status, time.perf_counter() - clock,
                                     route=request.url.path)
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
    try:
        body = await read_request_body(request, limit)
    except ReadTimedOut as timed_out:
        raise OipError(408, str(timed_out)) from None
    if body is None:
        raise OipError(413, f"body larger than {limit} bytes")
    return body


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")
