"""Reading a request body with a size cap, for every route that takes one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The whole body from an ASGI ``receive``, or None as soon as it exceeds ``limit`` bytes
    (the rest is never read into memory)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body if len(body) <= limit else None
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_request_body(request: Request, limit: int) -> bytes | None:
    """``read_body`` for a Starlette route: None at once when ``Content-Length`` already says
    the body is too large, so not a byte of it is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    return await read_body(request.receive, limit)
