"""``POST /predict`` as a plain ASGI handler.

It is the hot path, so it skips Starlette's Request/Response objects (≈10 µs a request,
docs/performance.md) and does only what the transport must: enforce the body size (413),
answer a body the server stopped waiting for (408, :mod:`buttress.http.protocol`), pick the
request id and deadline from headers, and write the answer with the buttress headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buttress.http.body import ReadTimedOut, discard_body, read_body
from buttress.http.request_ids import RequestIds
from buttress.pipeline.runtime import Answer
from buttress.resilience.deadline import InvalidDeadline

if TYPE_CHECKING:
    from buttress.pipeline.runtime import Runtime

JSON = (b"content-type", b"application/json")
CLOSE = (b"connection", b"close")


class PredictEndpoint:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.max_body = runtime.settings.max_body_bytes
        self._ids = RequestIds()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request_id = deadline = None
        declared_length = 0
        bypass_cache = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared_length = int(value) if value.isdigit() else 0
            elif name == b"x-request-id":
                request_id = value
            elif name == b"x-deadline-ms":
                deadline = value.decode("latin-1")
            elif name == b"cache-control":
                bypass_cache = b"no-cache" in value or b"no-store" in value
        rid = self._ids.pick(request_id)
        runtime = self.runtime
        if scope["method"] != "POST":  # answered, and recorded like any other request
            answer = runtime.reject(405, "use POST", rid)
            start, content = _messages(405, answer.body,
                                       [(b"allow", b"POST"), *_headers(answer, rid)])
            await send(start)
            await send(content)
            return
        if declared_length > self.max_body:
            await discard_body(scope, receive, declared_length, self.max_body)
            answer = runtime.reject(413, f"body larger than {self.max_body} bytes", rid)
        else:
            try:
                body = await read_body(scope, receive, self.max_body)
            except ReadTimedOut as timed_out:
                answer = runtime.reject(408, str(timed_out), rid)
                start, content = _messages(408, answer.body, [CLOSE, *_headers(answer, rid)])
                await send(start)
                await send(content)
                return
            if body is None:
                answer = runtime.reject(413, f"body larger than {self.max_body} bytes", rid)
            else:
                try:
                    budget = runtime.deadline_for(deadline)
                except InvalidDeadline as invalid:
                    answer = runtime.reject(400, str(invalid), rid)
                else:
                    answer = await runtime.answer(body, request_id=rid, deadline_s=budget,
                                                  bypass_cache=bypass_cache)
        headers = _headers(answer, rid)
        if answer.status == 413:  # whatever is left of the body is not worth reading
            headers.append(CLOSE)
        start, content = _messages(answer.status, answer.body, headers)
        await send(start)
        await send(content)


def _headers(answer: Answer, request_id: str) -> list[tuple[bytes, bytes]]:
    ctx = answer.context
    headers = [JSON, (b"x-request-id", request_id.encode())]
    if ctx.model_version:
        headers.append((b"x-model-version", ctx.model_version.encode()))
    if ctx.cache:
        headers.append((b"x-cache", ctx.cache.encode()))
    if ctx.fallbacks:
        headers.append((b"x-fallback", ",".join(ctx.fallback_categories).encode()))
    elif answer.status == 503 and answer.retry_after:
        headers.append((b"retry-after", b"1"))
    return headers


def _messages(status: int, body: bytes, headers: list[tuple[bytes, bytes]],
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a whole response (awaited by the caller: no coroutine of its
    own on the hot path)."""
    headers.append((b"content-length", str(len(body)).encode()))
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})
