"""What the batcher costs per item: ``submit()`` versus calling the model directly.

    .venv/bin/python bench/batcher_overhead.py [--items 20000] [--sklearn]

For 1 and 64 concurrent callers (each submitting one row at a time, closed loop) it prints
wall-clock and CPU microseconds per item, for
  * ``async``: a trivial async model (``x[:, 0]``), no executor: the batcher's own cost;
  * ``executor``: the same model behind ``in_executor`` (one thread hop per batch), the way a
    sync model is served;
  * with ``--sklearn``: a HistGradientBoosting model behind ``in_executor`` (fewer items).
"direct" awaits the same runner once per item with no batcher. At 1 caller the difference is
the latency a lone request pays for batching; at 64 callers it is the amortised saving.
Runs on uvloop when it is installed, like the server.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from buttress.batching import Batch, BatchCall, Batcher, Rows, in_executor

Submit = Callable[[Rows], Awaitable[Any]]


async def drive(submit: Submit, callers: int, items: int, row: Rows) -> tuple[float, float]:
    """Closed-loop callers; returns (wall µs, CPU µs) per item."""
    per_caller = max(1, items // callers)

    async def caller() -> None:
        for _ in range(per_caller):
            await submit(row)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    done = per_caller * callers
    return (
        (time.perf_counter() - wall) / done * 1e6,
        (time.process_time() - cpu) / done * 1e6,
    )


async def compare(name: str, run: BatchCall, row: Rows, items: int) -> None:
    for callers in (1, 64):
        best: dict[str, tuple[float, float]] = {}
        for label in ("direct", "batched"):
            for _ in range(3):  # best of three: the machine is shared
                batcher = Batcher(Batch(max_size=64, max_wait="2ms"), run)
                submit: Submit = run if label == "direct" else batcher.submit
                result = await drive(submit, callers, items, row)
                await batcher.aclose()
                if label not in best or result[0] < best[label][0]:
                    best[label] = result
        (dw, dc), (bw, bc) = best["direct"], best["batched"]
        print(
            f"{name:9} callers={callers:3}  direct {dw:7.1f} µs wall {dc:7.1f} µs cpu   "
            f"batched {bw:7.1f} µs wall {bc:7.1f} µs cpu   per-item delta {bw - dw:+7.1f} µs wall"
        )


def sklearn_model() -> Callable[[Rows], Rows]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 8))
    model = HistGradientBoostingRegressor(max_iter=100).fit(x, x @ rng.normal(size=8))
    predict: Callable[[Rows], Rows] = model.predict
    return predict


async def main(items: int, with_sklearn: bool) -> None:
    row = np.ones((1, 8))

    async def trivial(batch: Rows) -> Rows:
        return batch[:, 0]

    await compare("async", trivial, row, items)
    with ThreadPoolExecutor(max_workers=1) as pool:
        await compare("executor", in_executor(lambda b: b[:, 0], pool), row, items // 4)
        if with_sklearn:
            await compare("sklearn", in_executor(sklearn_model(), pool), row, items // 50)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--sklearn", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # plain asyncio works too, a little slower
        runner = asyncio.run
    print(f"event loop: {runner.__module__}")
    runner(main(args.items, args.sklearn))
