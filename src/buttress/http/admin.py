"""Admin routes under ``/admin``, behind ``Authorization: Bearer <BUTTRESS_ADMIN_TOKEN>``.

With no token configured the admin API does not exist (404), so a forgotten setting never
leaves it open.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from buttress.guardrails import GuardrailsUnavailable
from buttress.http.body import ReadTimedOut, read_request_body
from buttress.resilience.categories import Category, error_body

if TYPE_CHECKING:
    from buttress.pipeline.runtime import Runtime

Endpoint = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str) -> Response:
    return Response(error_body(Category.INPUT_INVALID, message), status_code=status,
                    media_type="application/json")


async def _capped_body(request: Request, runtime: Runtime) -> bytes | None:
    """The body, or None past ``max_body_bytes``, as ``/predict`` does: an admin token is no
    reason to hold an unbounded body in memory."""
    return await read_request_body(request, runtime.settings.max_body_bytes)


def _too_large(runtime: Runtime) -> Response:
    return _error(413, f"body larger than {runtime.settings.max_body_bytes} bytes")


def guarded(runtime: Runtime, endpoint: Endpoint) -> Endpoint:
    async def check(request: Request) -> Response:
        token = runtime.settings.admin_token
        if not token:
            return _error(404, "admin API disabled: set BUTTRESS_ADMIN_TOKEN to enable it")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _error(401, "missing or wrong bearer token")
        try:
            return await endpoint(request)
        except ReadTimedOut as timed_out:
            return _error(408, str(timed_out))
        except GuardrailsUnavailable as unavailable:  # Redis away: say so, as /predict does
            return Response(error_body(Category.GUARDRAIL_UNAVAILABLE, str(unavailable)),
                            status_code=503, media_type="application/json")

    return check


def admin_routes(runtime: Runtime) -> list[Route]:
    async def status(request: Request) -> Response:
        pipeline = runtime.pipeline
        return JSONResponse({
            "service": runtime.service.name,
            "ready": runtime.ready,
            "model_version": pipeline.model_version,
            "breakers": {name: stage.breaker.state.value
                         for name, stage in pipeline.stages.items() if stage.breaker},
            "events_dropped": runtime.events.dropped,
            "caches": {c.name: {**c.cache.stats().__dict__, "url": c.cache.url}
                       for c in pipeline.caches},
        })

    async def invalidate_cache(request: Request) -> Response:
        """``{"stage": name}`` empties that stage's cache; an empty body, the response cache
        and every stage cache. On Redis this reaches every replica at once."""
        body = await _capped_body(request, runtime)
        if body is None:
            return _too_large(runtime)
        try:
            wanted = (orjson.loads(body) or {}).get("stage") if body else None
        except (orjson.JSONDecodeError, AttributeError):
            return _error(400, 'expected a JSON object like {"stage": "user_features"}')
        caches = runtime.pipeline.caches
        chosen = [c for c in caches if wanted is None or c.name == wanted]
        if not chosen:
            known = ", ".join(c.name for c in caches) or "none"
            return _error(404, f"no cache named {wanted!r} (caches: {known})")
        done = {c.name: await c.cache.invalidate() for c in chosen}
        return JSONResponse({"invalidated": done})

    async def guardrails(request: Request) -> Response:
        gate = runtime.pipeline.gate
        if gate is None:
            return JSONResponse({"guardrails": []})
        snapshots = await gate.guardrails.snapshot()
        gate.export_usage(snapshots)
        return JSONResponse({"backend": gate.guardrails.url.redacted(),
                             "guardrails": [s.as_dict() for s in snapshots]})

    async def set_guardrail_limit(request: Request) -> Response:
        """``{"limit": 1000}`` changes a limit now (on every replica with Redis);
        ``{"limit": null}`` restores the declared one."""
        gate = runtime.pipeline.gate
        name = request.path_params["name"]
        raw = await _capped_body(request, runtime)
        if raw is None:
            return _too_large(runtime)
        try:
            body = orjson.loads(raw)
            limit = body["limit"]
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                                      or limit < 0):
                raise ValueError
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _error(400, 'expected {"limit": <non-negative number>} or {"limit": null}')
        if gate is None or name not in {g.name for g in gate.guardrails.guards}:
            return _error(404, f"no guardrail named {name!r}")
        try:
            await gate.guardrails.set_limit(name, limit)
        except ValueError as error:  # the guardrail's own bounds, e.g. limit <= 9e9
            return _error(400, str(error))
        return JSONResponse({"guardrail": name, "limit": limit})

    return [
        Route("/admin/status", guarded(runtime, status), methods=["GET"]),
        Route("/admin/guardrails", guarded(runtime, guardrails), methods=["GET"]),
        Route("/admin/guardrails/{name}", guarded(runtime, set_guardrail_limit),
              methods=["POST"]),
        Route("/admin/cache/invalidate", guarded(runtime, invalidate_cache), methods=["POST"]),
    ]
