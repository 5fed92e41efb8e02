"""Reading a request body with a size cap, for every route that takes one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

READ_TIMED_OUT = "buttress.read_timed_out"
"""Key of ``scope["extensions"]`` the server sets when it stopped waiting for the body
(:mod:`buttress.http.protocol`): what was read is all there is."""

class ReadTimedOut(Exception):
    """The client did not send the whole request within ``read_timeout``: answer 408."""

    def __init__(self) -> None:
        super().__init__("the request was not received within read_timeout")


def read_timed_out(scope: Any) -> bool:
    """Whether the server gave up reading this request (:mod:`buttress.http.protocol`)."""
    extensions = scope.get("extensions")
    return bool(extensions) and READ_TIMED_OUT in extensions


async def read_body(scope: Any, receive: Any, limit: int) -> bytes | None:
    """The whole body from an ASGI ``receive``, or None as soon as it exceeds ``limit`` bytes
    (the rest is never read into memory). Raises :class:`ReadTimedOut` when the server's read
    deadline cut the body short."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if "extensions" in scope and read_timed_out(scope):  # uvicorn's scope has none
            raise ReadTimedOut
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
    if read_timed_out(scope):
        raise ReadTimedOut
    return b"".join(chunks)


async def read_request_body(request: Request, limit: int) -> bytes | None:
    """``read_body`` for a Starlette route: None at once when ``Content-Length`` already says
    the body is too large, so not a byte of it is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    return await read_body(request.scope, request.receive, limit)
