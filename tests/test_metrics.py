"""The request tally: plain numbers on the request path, the same samples as Prometheus's own
``observe``/``inc`` once the registry is read."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from buttress.observability.metrics import LATENCY_BUCKETS, ServiceMetrics

LATENCIES = [0.0, 0.0005, 0.0007, 0.001, 0.003, 0.05, 0.25, 7.0, 11.0, 1e-9]


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted((k, v) for k, v in s.labels.items() if k != "service")): s.value
            for metric in registry.collect() for s in metric.samples
            if s.name.startswith(name) and not s.name.endswith("_created")}


def test_tallied_latencies_read_as_prometheus_would_have_observed_them() -> None:
    metrics = ServiceMetrics("tally")
    reference = CollectorRegistry()
    expected = Histogram("buttress_request_duration_seconds", "", buckets=LATENCY_BUCKETS,
                         registry=reference)
    for seconds in LATENCIES:
        metrics.requests.observe(200, seconds)
        expected.observe(seconds)
    assert _samples(metrics.registry, "buttress_request_duration_seconds") == \
        _samples(reference, "buttress_request_duration_seconds")


def test_statuses_and_in_flight_show_at_the_next_read_and_are_counted_once() -> None:
    metrics = ServiceMetrics("tally")
    registry = metrics.registry

    def requests(status: str) -> float | None:
        return registry.get_sample_value("buttress_requests_total",
                                         {"service": "tally", "status": status})

    assert requests("200") == 0.0  # shown before the first request
    for status in (200, 200, 503, 422, 200):
        metrics.requests.observe(status, 0.01)
    metrics.requests.in_flight = 3
    assert (requests("200"), requests("503"), requests("422")) == (3.0, 1.0, 1.0)
    assert requests("200") == 3.0  # a second read adds nothing
    assert registry.get_sample_value("buttress_in_flight_requests", {"service": "tally"}) == 3
    metrics.requests.observe(200, 0.01)
    body, _content_type = metrics.render()
    assert b'buttress_requests_total{service="tally",status="200"} 4.0' in body
    assert registry.get_sample_value("buttress_request_duration_seconds_count",
                                     {"service": "tally"}) == 6


async def test_event_loop_tasks_are_counted_when_the_metrics_are_read() -> None:
    """The soak test's task-leak check reads this gauge before and after a long load."""
    import asyncio

    metrics = ServiceMetrics("tasks")

    def tasks() -> float | None:
        return metrics.registry.get_sample_value("buttress_event_loop_tasks",
                                                 {"service": "tasks"})

    before = tasks()
    assert before == len(asyncio.all_tasks())
    sleepers = [asyncio.ensure_future(asyncio.sleep(60)) for _ in range(5)]
    assert tasks() == before + 5
    for sleeper in sleepers:
        sleeper.cancel()
    await asyncio.gather(*sleepers, return_exceptions=True)
    assert tasks() == before
