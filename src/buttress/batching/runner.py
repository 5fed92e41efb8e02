"""What the batcher calls once per batch (a ``BatchCall``), and how a sync model plugs in.

Not the model seam of the service (that is :class:`buttress.runners.Runner`, whose ``run``
is the ``BatchCall`` a stage hands its batcher): the batcher knows only this function type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from numpy.typing import NDArray

Rows = NDArray[Any]
BatchCall = Callable[[Rows], Awaitable[Rows]]
"""A 2-D batch in, one prediction per row (along axis 0) out."""


class RunCancelled(RuntimeError):
    """The model run itself was cancelled (e.g. its executor shut down); not retried."""


def in_executor(fn: Callable[[Rows], Rows], executor: Executor | None = None) -> BatchCall:
    """Wrap a sync model ``fn`` into a ``BatchCall``: one executor hop per batch.

    It returns the executor's Future itself, which the batcher awaits through a done
    callback: no task is created per batch. ``executor=None`` uses the loop's default one.
    """

    def run(batch: Rows) -> asyncio.Future[Rows]:
        return asyncio.get_running_loop().run_in_executor(executor, fn, batch)

    return run
