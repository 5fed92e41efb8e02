"""``/admin/models``: the registry from the admin API, behind the same bearer token.

- ``GET /admin/models``: every model, its aliases, versions (checksum, size, who, when) and
  the replicas reporting what they serve — the same summary as ``buttress models list``.
- ``POST /admin/models/{name}/promote`` with ``{"version": "v2", "reason": "..."}``.
- ``POST /admin/models/{name}/rollback`` with ``{"reason": "..."}`` (or no body).

Each change is recorded in the registry's history as made by ``admin@<client ip>``, or
``<label>@<client ip>`` when the client names itself in ``X-Buttress-Actor`` (a label, not
an identity: the token is the authentication). Status codes: 404 for an unknown model or
version, 409 when there is nothing to roll back to, 503 when the registry is unreachable.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from buttress.http.admin import _capped_body, _error, _too_large, guarded
from buttress.registry import (
    Change,
    NothingToRollBack,
    Registry,
    RegistryUnavailable,
    UnknownModel,
    UnknownVersion,
)
from buttress.registry.summary import summarize

if TYPE_CHECKING:
    from buttress.pipeline.runtime import Runtime

ACTOR_HEADER = "x-buttress-actor"
_LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")


def actor(request: Request) -> str:
    """Who made the change, for the audit history."""
    label = request.headers.get(ACTOR_HEADER, "")
    host = request.client.host if request.client else "unknown"
    return f"{label if _LABEL.fullmatch(label) else 'admin'}@{host}"


def _unavailable(error: RegistryUnavailable) -> JSONResponse:
    return JSONResponse({"error": {"category": "internal",
                                   "message": f"registry unavailable: {error}", "fields": []}},
                        status_code=503)


def _changed(name: str, action: str, change: Change | None) -> JSONResponse:
    if change is None:
        return JSONResponse({"model": name, "action": action, "changed": False})
    return JSONResponse({"model": name, "action": action, "changed": True,
                         "alias": change.alias, "from": change.from_version,
                         "to": change.to_version, "who": change.who, "why": change.why,
                         "revision": change.revision})


def model_routes(runtime: Runtime, registry: Registry) -> list[Route]:
    async def body_of(request: Request) -> dict[str, Any] | Response:
        raw = await _capped_body(request, runtime)
        if raw is None:
            return _too_large(runtime)
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
            return _error(400, 'expected a JSON object like {"version": "v2", "reason": "..."}')
        return body

    async def list_models(request: Request) -> Response:
        try:
            return JSONResponse(await summarize(registry))
        except RegistryUnavailable as error:
            return _unavailable(error)

    async def promote(request: Request) -> Response:
        name = request.path_params["name"]
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        version = body.get("version")
        if not isinstance(version, str):
            return _error(400, 'expected {"version": "<version>"}')
        try:
            change = await registry.promote(name, version, who=actor(request),
                                            why=body.get("reason", ""))
        except (UnknownModel, UnknownVersion) as error:
            return _error(404, str(error))
        except RegistryUnavailable as error:
            return _unavailable(error)
        return _changed(name, "promote", change)

    async def rollback(request: Request) -> Response:
        name = request.path_params["name"]
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        try:
            change = await registry.rollback(name, who=actor(request),
                                             why=body.get("reason", ""))
        except UnknownModel as error:
            return _error(404, str(error))
        except NothingToRollBack as error:
            return _error(409, str(error))
        except RegistryUnavailable as error:
            return _unavailable(error)
        return _changed(name, "rollback", change)

    return [
        Route("/admin/models", guarded(runtime, list_models), methods=["GET"]),
        Route("/admin/models/{name}/promote", guarded(runtime, promote), methods=["POST"]),
        Route("/admin/models/{name}/rollback", guarded(runtime, rollback), methods=["POST"]),
    ]
