"""The event log: one JSON line per event, in order; a full buffer drops the oldest."""

from __future__ import annotations

from pathlib import Path

import orjson

from buttress.observability.events import EventLog, JsonlSink, MemorySink


def _lines(directory: Path) -> list[dict[str, object]]:
    (path,) = directory.glob("events-*.jsonl")
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_jsonl_sink_appends_one_line_per_event_in_order(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    sink.write([{"request_id": "a", "stage_ms": {"model": 1.5}}, {"request_id": "b\nc"}])
    sink.write([{"request_id": "d", "fallbacks": ["model_timeout"]}])
    sink.close()
    assert _lines(tmp_path) == [{"request_id": "a", "stage_ms": {"model": 1.5}},
                                {"request_id": "b\nc"},
                                {"request_id": "d", "fallbacks": ["model_timeout"]}]


def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    dropped: list[int] = []
    sink = MemorySink()
    log = EventLog([sink], capacity=3, on_dropped=dropped.append)
    for index in range(5):
        log.emit({"n": index})
    log.flush()
    assert [e["n"] for e in sink.events] == [2, 3, 4]
    assert log.dropped == 2
    assert dropped == [1, 1]
