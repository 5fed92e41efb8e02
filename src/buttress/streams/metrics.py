"""The stream metrics of one consumer, in its service's registry (one ``/metrics``).

Labels are bounded: a consumer process reads one stream as one group, both named on its
command line; ``outcome`` and ``operation`` are closed sets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from buttress.streams.types import Lag

OUTCOMES = ("answered", "dead_lettered")
OPERATIONS = ("fetch", "write", "ack", "lag")


class StreamMetrics:
    """The stream metrics of one (stream, group) in a registry. Consumers of the same stream
    and group in one process share one (``StreamConsumer(metrics=...)``)."""

    def __init__(self, registry: CollectorRegistry, service: str, stream: str,
                 group: str) -> None:
        labels = (service, stream, group)
        names = ["service", "stream", "group"]
        self.behind = Gauge(
            "buttress_stream_lag_messages", "Messages of the stream the consumer group has not "
            "acknowledged yet (never delivered or still pending).", names, registry=registry,
            multiprocess_mode="livemax").labels(*labels)
        self.pending = Gauge(
            "buttress_stream_pending_messages", "Messages delivered to the group and not yet "
            "acknowledged.", names, registry=registry,
            multiprocess_mode="livemax").labels(*labels)
        self.oldest_age = Gauge(
            "buttress_stream_oldest_unacked_seconds", "Age of the oldest message the group has "
            "not acknowledged (0 when caught up).", names, registry=registry,
            multiprocess_mode="livemax").labels(*labels)
        self.in_flight = Gauge(
            "buttress_stream_in_flight_messages", "Messages this consumer is answering now.",
            names, registry=registry, multiprocess_mode="livesum").labels(*labels)
        messages = Counter(
            "buttress_stream_messages_total", "Messages consumed, by outcome (answered: written "
            "to the sink; dead_lettered: refused by the input contract).",
            [*names, "outcome"], registry=registry)
        self.messages = {o: messages.labels(*labels, o) for o in OUTCOMES}
        errors = Counter(
            "buttress_stream_errors_total", "Broker operations that failed (retried), by "
            "operation.", [*names, "operation"], registry=registry)
        self.errors = {o: errors.labels(*labels, o) for o in OPERATIONS}

    def set_lag(self, lag: Lag) -> None:
        self.behind.set(lag.behind)
        self.pending.set(lag.pending)
        self.oldest_age.set(lag.oldest_age_s)
