"""The demo service built and started in this process, on an event loop of its own.

Hypothesis runs its examples synchronously; each one hands a coroutine to this loop. Building
the runtime once per module keeps a generated case at the cost of one ``Runtime.answer``
(about a millisecond) instead of a server round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from buttress.config import Settings
from buttress.pipeline.runtime import Answer, Runtime

T = TypeVar("T")


class InProcessDemo:
    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        self.runtime = runtime
        self.loop = loop
        self.served = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def answer(self, body: bytes, **options: Any) -> Answer:
        self.served += 1
        return self.run(self.runtime.answer(body, request_id="reliability", **options))


@contextmanager
def demo_in_process(workdir: Path, **settings: Any) -> Iterator[InProcessDemo]:
    from buttress.demo.service import svc

    values: dict[str, Any] = {"events_dir": str(workdir / "events"), "deadline": 2.0,
                              "max_deadline": 2.0, "max_concurrency": "off", **settings}
    runtime = svc.build(Settings(**values))
    loop = asyncio.new_event_loop()
    demo = InProcessDemo(runtime, loop)
    demo.run(runtime.start())
    try:
        yield demo
    finally:
        demo.run(runtime.stop())
        loop.close()
