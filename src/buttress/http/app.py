"""The ASGI application: ``/predict`` on a fast path, everything else through Starlette."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from buttress.dashboard import DashboardData, dashboard_routes
from buttress.http.admin import admin_routes
from buttress.http.admin_models import model_routes
from buttress.http.oip import oip_routes
from buttress.http.openapi import build_openapi
from buttress.http.predict import PredictEndpoint
from buttress.registry import Registry

if TYPE_CHECKING:
    from buttress.pipeline.runtime import Runtime


class ButtressApp:
    """Routes ``/predict`` straight to its handler; hands the rest to Starlette."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.predict = PredictEndpoint(runtime)
        self.routes = _starlette(runtime)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict":
            await self.predict(scope, receive, send)
        else:
            await self.routes(scope, receive, send)


def create_app(runtime: Runtime) -> ButtressApp:
    return ButtressApp(runtime)


def create_probe_app(runtime: Runtime) -> Starlette:
    """Only ``/healthz``, ``/readyz`` and ``/metrics``, for a process that serves a stream
    rather than HTTP requests (``buttress consume``); it starts and stops the runtime itself."""
    return Starlette(routes=probe_routes(runtime))


def probe_routes(runtime: Runtime) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        if runtime.ready and not runtime.draining:
            return JSONResponse({"status": "ready", "model_version":
                                 runtime.pipeline.model_version})
        reason = "draining" if runtime.draining else "starting"
        return JSONResponse({"status": reason}, status_code=503)

    async def metrics(request: Request) -> Response:
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _starlette(runtime: Runtime) -> Starlette:
    openapi = build_openapi(runtime.service)
    settings = runtime.settings
    # for the admin API; building it does no I/O, it connects on first use
    registry = Registry(settings.registry_url, models_dir=settings.models_dir,
                        on_change=runtime.metrics.count_model_change,
                        on_refused=runtime.metrics.count_model_refused)
    dashboard = DashboardData(runtime, registry) if settings.dashboard else None

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            try:
                if dashboard is not None:
                    await dashboard.aclose()
                await runtime.stop()
            finally:
                await registry.aclose()

    app = Starlette(
        routes=[
            *probe_routes(runtime),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            *admin_routes(runtime),
            *model_routes(runtime, registry),
            *oip_routes(runtime),
            *(dashboard_routes(dashboard) if dashboard is not None else []),
        ],
        lifespan=lifespan,
    )
    # An API answers the path it was asked: no 307 to a "/"-trimmed path (an encoded "/" in a
    # name made admin routes redirect before their token was checked).
    app.router.redirect_slashes = False
    app.state.registry = registry
    return app
