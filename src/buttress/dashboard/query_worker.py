"""``python -m buttress.dashboard.query_worker``: the process that runs the dashboard's insight
queries, started by :class:`~buttress.dashboard.refresh.InsightCharts` and fed one request per
line on stdin (``{"events_dir", "queries", "now"}``), answering one line of charts on stdout.

Why a process of its own, at the lowest CPU priority (``nice`` 19): in a thread of the server
the queries share the server's core and, for parts of a run, its GIL; an open page then took
a saturated demo to 0.91x its throughput and its healthy answers from 100 % to 62 %
(``bench/dashboard.py``, docs/dashboard.md). A thread of the lowest priority would be worse:
preempted while it holds the GIL, it holds up the event loop until it runs again. A process
shares no GIL, and at nice 19 it gets only what the requests leave.
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
