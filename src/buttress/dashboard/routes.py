"""``GET /dashboard`` (the page), ``/dashboard/static/{name}`` (its files, shipped in the
package) and ``GET /dashboard/data`` (what the page polls).

Read-only and unauthenticated, like ``/metrics``: the data holds numbers, names of the
service's own stages, caches, guardrails, models and contract fields (bounded: unknown keys
are one ``<unknown>``), never a client's values or a secret. The page's promote and rollback
buttons call the admin API (``/admin/models/...``) with the admin token the user types in;
this module never sees it. ``dashboard = false`` removes all three routes (404).

The page is locked down as a page holding a token should be: scripts and styles from this
origin only (no inline script, no CDN, no external font), no framing (clickjacking a rollback
button), no referrer, and nothing it fetches may leave the origin.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buttress.dashboard.data import DashboardData

ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGE = "index.html"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def static_file(name: str) -> bytes:
    """A file of the page, from the installed package (``buttress/dashboard/static``)."""
    return resources.files("buttress.dashboard").joinpath("static", name).read_bytes()


def dashboard_routes(data: DashboardData) -> list[Route]:
    files = {name: static_file(name) for name in (PAGE, *ASSETS)}  # a few kB, read once

    async def page(request: Request) -> Response:
        return Response(files[PAGE], media_type="text/html; charset=utf-8",
                        headers={**SECURITY_HEADERS, "cache-control": "no-cache"})

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return Response(b"not found", status_code=404, media_type="text/plain")
        return Response(files[name], media_type=ASSETS[name],
                        headers={**SECURITY_HEADERS, "cache-control": "no-cache"})

    async def document(request: Request) -> Response:
        return Response(await data.document(), media_type="application/json",
                        headers={"cache-control": "no-store",
                                 "x-content-type-options": "nosniff"})

    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/data", document, methods=["GET"]),
        Route("/dashboard/static/{name}", asset, methods=["GET"]),
    ]
