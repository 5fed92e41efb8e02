"""``python -m buttress.dashboard.query_worker``: the process that runs the dashboard's insight
queries, started by :class:`~buttress.dashboard.refresh.InsightCharts` and fed one request per
line on stdin (``{"events_dir", "queries", "now"}``), answering one line of charts on stdout.

Why a process of its own, at the lowest CPU priority (``nice`` 19): DuckDB holds the GIL for
parts of a run, so in a thread of the server a refresh stalled the event loop (an ordinary
thread took a saturated server's healthy answers from 100 % to 8 % in ``bench/dashboard.py``;
a low-priority thread is worse: preempted while holding the GIL, it stalled the loop for
185 ms). A process shares no GIL, and at nice 19 it gets only what the requests leave.
"""

from __future__ import annotations

import os
import sys

import orjson

from buttress.dashboard.charts import charts_of

LOWEST_PRIORITY = 19


def main() -> None:
    if hasattr(os, "nice"):
        os.nice(LOWEST_PRIORITY)
    for line in sys.stdin.buffer:
        request = orjson.loads(line)
        charts = charts_of(request["events_dir"], request["queries"], request["now"])
        sys.stdout.buffer.write(orjson.dumps(charts) + b"\n")
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
