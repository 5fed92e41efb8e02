"""``buttress consume TARGET --source URL --sink URL``: a service over a message stream.

One process: the runtime (built as ``serve`` builds it), the stream consumer, and a small
HTTP server with ``/healthz``, ``/readyz`` and ``/metrics`` (the lag included) so Prometheus
can scrape it (``--port 0``: none). SIGTERM or SIGINT: ``/readyz`` turns 503, fetching stops,
the messages in flight are answered, written and acknowledged, then the process exits 0.

The runtime's admission limit is turned off here: a stream waits in the broker instead of
being shed, and the consumer's in-flight bound (``--max-in-flight``) is the door.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from buttress.cli.server import configure_logging, ensure_port_free, load_target
from buttress.config import Settings
from buttress.service import Service
from buttress.streams import StreamConsumer, open_sink, open_source, parse_stream_url
from buttress.streams.urls import StreamURL


def consume(target: str, settings: Settings, *, source: str, sink: str,
            dead_letters: str | None = None, max_in_flight: int = 64) -> None:
    """Run until SIGTERM/SIGINT. Raises ``TargetError``/``ValueError`` for a bad target or URL
    before anything starts."""
    import uvloop

    service = load_target(target)
    urls = (parse_stream_url(source), parse_stream_url(sink))
    dead_url = parse_stream_url(dead_letters) if dead_letters else urls[1].dead_letters()
    if settings.port:
        ensure_port_free(settings.host, settings.port)
    configure_logging(settings)
    settings = settings.model_copy(update={"max_concurrency": "off"})
    uvloop.run(_consume(service, settings, *urls, dead_url, max_in_flight))


async def _consume(service: Service, settings: Settings, source_url: StreamURL,
                   sink_url: StreamURL, dead_url: StreamURL, max_in_flight: int) -> None:
    runtime = service.build(settings)
    stop = asyncio.Event()

    def on_signal() -> None:
        runtime.draining = True
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    async with contextlib.AsyncExitStack() as stack:
        source = await open_source(source_url)
        stack.push_async_callback(source.aclose)
        sink = await open_sink(sink_url)
        stack.push_async_callback(sink.aclose)
        dead = await open_sink(dead_url)
        stack.push_async_callback(dead.aclose)
        await runtime.start()
        stack.push_async_callback(runtime.stop)
        if settings.port:
            server = _probe_server(runtime, settings)
            task = asyncio.create_task(server.serve(), name="probes")

            async def stop_server() -> None:
                server.should_exit = True
                await task

            stack.push_async_callback(stop_server)
        consumer = StreamConsumer(runtime, source, sink, dead, max_in_flight=max_in_flight)
        await consumer.run(stop)


def _probe_server(runtime: Any, settings: Settings) -> Any:
    """uvicorn serving the probe routes in this loop; signals stay with the consumer."""
    import uvicorn

    from buttress.http.app import create_probe_app

    class ProbeServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(create_probe_app(runtime), host=settings.host, port=settings.port,
                            log_level="warning", access_log=False, lifespan="off",
                            server_header=False)
    return ProbeServer(config)
