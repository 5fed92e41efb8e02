"""The event log: one JSON line per event, in order; a full buffer drops the oldest."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from buttress.observability.events import (
    Deferred,
    EventLog,
    JsonlSink,
    MemorySink,
    Retention,
    StdoutSink,
)
from tests.support import FakeClock


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


# --- rotation, retention, other sinks, shutdown ----------------------------------------------


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("events-*.jsonl"))


def test_a_file_rotates_before_it_would_pass_rotate_bytes(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path, Retention(rotate_bytes=1024, rotate_interval=None,
                                         keep_days=None))
    event = {"request_id": "x" * 80}  # ~100 bytes a line
    for _ in range(25):
        sink.write([event])
    sink.close()
    files = _files(tmp_path)
    assert len(files) == 3
    assert all(path.stat().st_size <= 1024 for path in files)
    assert sum(len(path.read_bytes().splitlines()) for path in files) == 25


def test_a_file_larger_than_rotate_bytes_in_one_batch_is_still_written(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path, Retention(rotate_bytes=1024, rotate_interval=None))
    sink.write([{"request_id": "x" * 80}] * 30)
    sink.close()
    (path,) = _files(tmp_path)
    assert len(path.read_bytes().splitlines()) == 30


def test_a_file_rotates_after_rotate_interval(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)
    sink = JsonlSink(tmp_path, Retention(rotate_bytes=None, rotate_interval=60.0,
                                         keep_days=None), clock=clock)
    sink.write([{"n": 1}])
    clock.advance(59)
    sink.write([{"n": 2}])
    clock.advance(1)
    sink.write([{"n": 3}])
    sink.close()
    assert [len(p.read_bytes().splitlines()) for p in _files(tmp_path)] == [2, 1]


def _old_file(directory: Path, name: str, age_days: float, size: int = 100) -> Path:
    path = directory / name
    path.write_bytes(b"{}\n" * (size // 3))
    stamp = time.time() - age_days * 86400
    os.utime(path, (stamp, stamp))
    return path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_files_older_than_keep_days_are_deleted_at_rotation(tmp_path: Path) -> None:
    dead = _dead_pid()
    old = _old_file(tmp_path, f"events-20200101T000000-{dead}-0001.jsonl", age_days=9)
    older_format = _old_file(tmp_path, f"events-20200101-{dead}.jsonl", age_days=30)
    recent = _old_file(tmp_path, f"events-20200108T000000-{dead}-0002.jsonl", age_days=2)
    sink = JsonlSink(tmp_path, Retention(keep_days=7))
    sink.write([{"n": 1}])
    sink.close()
    assert not old.exists()
    assert not older_format.exists()
    assert recent.exists()
    assert len(_files(tmp_path)) == 2


def test_the_newest_file_of_a_live_process_is_never_deleted(tmp_path: Path) -> None:
    live = os.getppid()  # alive for the whole test
    previous = _old_file(tmp_path, f"events-20200101T000000-{live}-0001.jsonl", age_days=20)
    current = _old_file(tmp_path, f"events-20200102T000000-{live}-0002.jsonl", age_days=10)
    sink = JsonlSink(tmp_path, Retention(keep_days=7, keep_bytes=1024))
    sink.write([{"n": 1}])
    sink.close()
    assert not previous.exists()
    assert current.exists(), "another process may still be writing it"


def test_the_oldest_files_go_until_keep_bytes_is_met(tmp_path: Path) -> None:
    dead = _dead_pid()
    paths = [_old_file(tmp_path, f"events-2020010{day}T000000-{dead}-000{day}.jsonl",
                       age_days=6 - day, size=3000) for day in range(1, 6)]
    sink = JsonlSink(tmp_path, Retention(keep_days=None, keep_bytes=10_000))
    sink.write([{"n": 1}])
    sink.close()
    assert [path.exists() for path in paths] == [False, False, True, True, True]
    assert sum(p.stat().st_size for p in _files(tmp_path)) <= 10_000


def test_the_stdout_sink_writes_json_lines() -> None:
    stream = io.BytesIO()
    sink = StdoutSink(stream)
    sink.write([{"v": 1, "kind": "request"}, {"v": 1, "kind": "exception"}])
    assert [orjson.loads(line)["kind"] for line in stream.getvalue().splitlines()] == [
        "request", "exception"]


async def test_stopping_the_log_writes_everything_buffered(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    log = EventLog([sink], flush_interval=3600)  # the writer would never get to it
    log.start()
    for index in range(1000):
        log.emit({"n": index})
    await log.aclose()
    assert [e["n"] for e in _lines(tmp_path)] == list(range(1000))


def test_a_failing_sink_counts_its_events_as_dropped_and_spares_the_others() -> None:
    class Broken:
        def write(self, events: list[dict[str, Any]]) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    dropped: list[int] = []
    sink = MemorySink()
    log = EventLog([Broken(), sink], on_dropped=dropped.append)
    log.emit({"n": 1})
    log.emit({"n": 2})
    log.flush()
    assert [e["n"] for e in sink.events] == [1, 2]
    assert dropped == [2]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs of this test's own: a disk that fills up (mounting needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
        capture_output=True, check=False).returncode == 0
    if not mounted:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def test_a_full_disk_loses_whole_batches_counted_and_never_writes_them_later(
        small_disk: Path) -> None:
    """Disk full: a batch is written whole or not at all, and one counted as dropped never
    turns up later (events were half-written, and a lost batch's rest was kept in a buffer
    and written once there was room again; found by tests/reliability/test_faults_events.py).
    """
    log = EventLog([JsonlSink(small_disk, Retention(None, None, None, None))])
    pad = "x" * 300
    sent = 0

    def batches(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            for _ in range(7):
                log.emit({"n": sent, "pad": pad})
                sent += 1
            log.flush()

    batches(2)
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as file, contextlib.suppress(OSError):
        while True:
            file.write(bytes(512))
    batches(20)  # the disk is full: these fail, some after writing part of a batch
    assert log.dropped > 0
    filler.unlink()
    batches(3)
    log.flush()
    lines = [line for path in small_disk.glob("events-*.jsonl")
             for line in path.read_bytes().splitlines()]
    written = [orjson.loads(line)["n"] for line in lines]  # each line one whole event
    assert len(written) == len(set(written))
    assert len(written) + log.dropped == sent


def test_a_deferred_field_is_computed_by_the_writer() -> None:
    calls: list[int] = []

    def summary(n: int) -> dict[str, int]:
        calls.append(n)
        if n == 2:
            raise ZeroDivisionError("boom")
        return {"double": 2 * n}

    sink = MemorySink()
    log = EventLog([sink])
    log.emit({"n": 1, "prediction": Deferred(summary, 1)})
    log.emit({"n": 2, "prediction": Deferred(summary, 2)})
    log.emit({"n": 3, "prediction": None})
    assert calls == []  # nothing computed while emitting
    log.flush()
    assert [e["prediction"] for e in sink.events] == [
        {"double": 2}, {"error": "ZeroDivisionError: boom"}, None]


def test_values_json_cannot_hold_are_written_as_text(tmp_path: Path) -> None:
    import decimal

    import numpy as np

    sink = JsonlSink(tmp_path)
    sink.write([{"prediction": {"pct": np.float64(7.5), "n": np.int64(3), 1: "x",
                                "price": decimal.Decimal("9.99")}}])
    sink.close()
    assert _lines(tmp_path) == [{"prediction": {"pct": 7.5, "n": 3, "1": "x", "price": "9.99"}}]


def test_rotation_and_retention_settings_read_sizes_durations_and_0_for_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from buttress.config import ConfigError, Settings, load_settings

    settings = Settings(events_rotate_bytes="8KiB", events_rotate_interval="10min",
                        events_keep_days=0, events_keep_bytes="1GB")
    assert (settings.events_rotate_bytes, settings.events_rotate_interval,
            settings.events_keep_days, settings.events_keep_bytes) == (
        8192, 600.0, None, 1_000_000_000)
    assert Settings(events_rotate_bytes=0, events_rotate_interval=0).events_rotate_bytes is None
    monkeypatch.setenv("BUTTRESS_EVENTS_ROTATE_BYTES", "12")
    with pytest.raises(ConfigError, match="events_rotate_bytes"):
        load_settings()
