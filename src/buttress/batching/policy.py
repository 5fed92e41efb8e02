"""``bt.Batch``: how the server groups concurrent model calls, declared once and validated."""

from __future__ import annotations

from dataclasses import dataclass

from buttress.resilience.durations import Duration, seconds


@dataclass(frozen=True)
class Batch:
    """Dynamic batching settings for one model.

    ``max_size`` counts rows, not requests: an order with 12 sub-orders fills 12 of them.
    A batch is flushed when it holds ``max_size`` rows or its oldest item has waited
    ``max_wait``. At most ``max_queue`` rows may wait; beyond that ``submit`` sheds the
    request with ``QueueFull`` instead of letting latency grow. ``adaptive`` skips the wait
    when traffic is too thin for a batch to form (see ``Batcher``).
    """

    max_size: int = 64
    max_wait: Duration = "2ms"
    max_queue: int = 1024
    adaptive: bool = True

    def __post_init__(self) -> None:
        for name in ("max_size", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Batch.{name} must be a positive int, got {value!r}")
        if self.max_queue < self.max_size:
            raise ValueError(
                f"Batch.max_queue ({self.max_queue}) must be at least max_size ({self.max_size})"
            )
        seconds(self.max_wait, name="Batch.max_wait")
        if not isinstance(self.adaptive, bool):
            raise TypeError(f"Batch.adaptive must be a bool, got {self.adaptive!r}")

    @property
    def max_wait_seconds(self) -> float:
        return seconds(self.max_wait)
