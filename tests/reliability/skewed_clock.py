"""Run buttress's CLI with this process's wall clock off by ``--offset`` seconds.

    python tests/reliability/skewed_clock.py --offset -2.0 -- serve TARGET --port 8001

The machine's clock cannot be moved for one process, so the replica tests move it inside the
process: ``time.time`` and ``time.time_ns`` are replaced before buttress (or uvicorn, or
redis-py) is imported, so every module that reads the wall clock through them — either as
``time.time()`` or as a name imported from ``time`` — sees the skewed one. Monotonic clocks
(timeouts, the event loop) are not wall clocks and stay as they are, as on a real machine whose
NTP is off. ``datetime.now()`` reads the C library directly and is not moved: nothing in the
guardrail path uses it.

A test-only wrapper on purpose: nothing in ``src/`` knows about it.
"""

from __future__ import annotations

import sys
import time


def skew(offset: float) -> None:
    real_time, real_time_ns = time.time, time.time_ns
    offset_ns = round(offset * 1e9)

    def skewed_time() -> float:
        return real_time() + offset

    def skewed_time_ns() -> int:
        return real_time_ns() + offset_ns

    time.time = skewed_time
    time.time_ns = skewed_time_ns


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[0] != "--offset" or argv[2] != "--":
        raise SystemExit("usage: skewed_clock.py --offset SECONDS -- CLI ARGUMENTS...")
    skew(float(argv[1]))
    from buttress.cli import main as cli

    sys.argv = ["buttress", *argv[3:]]
    cli()


if __name__ == "__main__":
    main(sys.argv[1:])
