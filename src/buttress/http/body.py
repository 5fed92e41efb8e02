"""Reading a request body with a size cap, for every route that takes one."""

from __future__ import annotations

from typing import Any


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
