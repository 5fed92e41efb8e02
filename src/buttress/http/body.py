"""Reading a request body with a size cap, for every route that takes one.

A body over the cap is refused with 413, but not before the rest of it has been read and
thrown away (up to :data:`DRAIN_LIMIT` bytes, within the server's ``read_timeout``): closing
while the client still sends makes the kernel reset the connection, and clients that send the
whole body before reading the answer (Python's ``urllib``/``http.client``) then saw
"Connection reset by peer" instead of the 413. This is nginx's lingering close, done by the
app: nothing of the discarded body is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

READ_TIMED_OUT = "buttress.read_timed_out"
"""Key of ``scope["extensions"]`` the server sets when it stopped waiting for the body
(:mod:`buttress.http.protocol`): what was read is all there is."""

DRAIN_LIMIT = 32 * 1024 * 1024
"""Bytes of a refused body read and discarded before answering; a body declared larger than
``max_body_bytes`` + this is refused at once (a client sending that much is cut off anyway)."""


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
            if message.get("more_body"):
                await _discard(receive, DRAIN_LIMIT)
            return None
        chunks.append(chunk)
    if read_timed_out(scope):
        raise ReadTimedOut
    return b"".join(chunks)


async def discard_body(scope: Any, receive: Any, declared: int, limit: int) -> None:
    """Read and throw away a body declared ``declared`` bytes long, refused as larger than
    ``limit``, when that is worth it: not when the client waits for ``100 Continue`` before
    sending it (asking for it would make it send), nor when it is too large to drain."""
    if declared - limit > DRAIN_LIMIT:
        return
    for name, value in scope["headers"]:
        if name == b"expect" and value.lower() == b"100-continue":
            return
    await _discard(receive, declared)


async def _discard(receive: Any, budget: int) -> None:
    """Receive and drop body messages until the body ends, ``budget`` bytes have been
    dropped, or the server stops reading it (its read deadline ends the body)."""
    dropped = 0
    while dropped <= budget:
        message = await receive()
        dropped += len(message.get("body", b""))
        if not message.get("more_body"):
            return


async def read_request_body(request: Request, limit: int) -> bytes | None:
    """``read_body`` for a Starlette route: None when ``Content-Length`` already says the body
    is too large, so not a byte of it is kept."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await discard_body(request.scope, request.receive, int(declared), limit)
        return None
    return await read_body(request.scope, request.receive, limit)
