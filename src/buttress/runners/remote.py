"""A model on a model server, reached over the Open Inference Protocol (KServe V2 REST).

``RemoteModel`` is the declaration (URL, model, timeout, breaker); each built service gets
its own :class:`RemoteRunner` from it, with its own connection pool and breaker, bound to the
event loop that runs it.

Failures and the two breakers:

* The runner's breaker guards the *endpoint*. It counts one outcome per HTTP call (one per
  batch when the stage batches): transport errors, timeouts, 5xx, 404/429 and unreadable
  answers are failures; 400/422 (this request's fault) and 200 are successes. While it is
  open, ``run`` raises :class:`RemoteUnavailable` at once, without touching the network.
* The stage's breaker (``@svc.model(breaker=...)``) guards the *stage* and counts one outcome
  per request. A failing endpoint trips both; once the runner's is open, requests fail fast
  with ``RemoteUnavailable`` (a shed, like a full queue: ``model_unavailable``), so the
  stage's breaker needs not open for calls to stop reaching a dead server.
* ``timeout`` bounds each HTTP call as a whole. Keep it at or below the stage's timeout: if
  the stage gives up first (it cancels an unbatched call), the runner's breaker never sees
  the timeout; only the stage's does.

:class:`RemoteTimeout` is a ``TimeoutError`` (the stage reports ``model_timeout``);
:class:`RemoteError` is any other failure (``model_error``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import ClassVar

import httpx
import numpy as np

from buttress.oip.client import OipClient
from buttress.oip.codec import TensorError
from buttress.oip.errors import OipError
from buttress.oip.types import dtype_of
from buttress.resilience.breaker import Breaker, CircuitBreaker
from buttress.resilience.durations import Duration, seconds
from buttress.resilience.failures import Failure
from buttress.runners.types import Signature, one_per_row

_REQUEST_FAULTS = frozenset({400, 422})


class RemoteError(RuntimeError):
    """The model server failed, answered an error, or could not be reached."""


class RemoteTimeout(TimeoutError):
    """The model server did not answer within the runner's timeout."""


class RemoteUnavailable(RuntimeError):
    """The runner's breaker is open: the call was refused without reaching the server."""

    failure: ClassVar[Failure] = Failure.UNAVAILABLE


@dataclass(frozen=True)
class RemoteModel:
    """``model_name`` served at ``url`` by an OIP server, e.g.
    ``RemoteModel("http://models:8080", "discount", timeout="80ms")``.

    ``datatype`` casts the rows before sending (``"FP32"`` for a Triton model that takes
    float32; default: the rows' own dtype); ``input_name`` names the one input tensor and
    ``output_name`` picks an output (default: the first). Connections are pooled, at most
    ``max_connections`` at once.
    """

    url: str
    model_name: str
    _: KW_ONLY
    timeout: Duration = "100ms"
    version: str | None = None
    breaker: Breaker = field(default_factory=lambda: Breaker(consecutive_failures=5,
                                                             open_for="5s"))
    datatype: str | None = None
    input_name: str = "input-0"
    output_name: str | None = None
    max_connections: int = 16

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"RemoteModel url {self.url!r} must start with http:// or https://")
        if not self.model_name:
            raise ValueError("RemoteModel needs a model_name")
        if seconds(self.timeout, name="RemoteModel.timeout") <= 0:
            raise ValueError("RemoteModel.timeout must be positive")
        if self.datatype is not None:
            dtype_of(self.datatype)
        if self.max_connections < 1:
            raise ValueError("RemoteModel.max_connections must be at least 1")

    def build_runner(self, threads: int = 1, native_threads: int = 1) -> RemoteRunner:
        return RemoteRunner(self)


class RemoteRunner:
    """The running side of a :class:`RemoteModel`: its connection pool and its breaker."""

    def __init__(self, model: RemoteModel, *, clock: Callable[[], float] = time.monotonic,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.model = model
        self._clock = clock
        self.breaker: CircuitBreaker = model.breaker.build(clock)
        self._timeout = seconds(model.timeout)
        self._dtype = dtype_of(model.datatype) if model.datatype else None
        self._client = OipClient(model.url, timeout=self._timeout,
                                 max_connections=model.max_connections, transport=transport)
        self._closing: asyncio.Task[None] | None = None

    async def run(self, rows: np.ndarray) -> np.ndarray:
        breaker = self.breaker
        if not breaker.allow():
            raise RemoteUnavailable(f"{self.model.model_name} at {self.model.url}: circuit "
                                    f"breaker {breaker.state}, not calling the server")
        admitted_in = breaker.period
        if self._dtype is not None:
            rows = np.asarray(rows, dtype=self._dtype)
        try:
            async with asyncio.timeout(self._timeout):
                predictions = await self._client.infer(
                    self.model.model_name, rows, version=self.model.version,
                    input_name=self.model.input_name, output_name=self.model.output_name)
        except (TimeoutError, httpx.TimeoutException) as error:
            breaker.record_failure()
            raise RemoteTimeout(f"{self._where()} did not answer within "
                                f"{1000 * self._timeout:.0f} ms") from error
        except OipError as error:
            if error.status in _REQUEST_FAULTS:
                breaker.record_success()  # the server is fine; these rows are not
            else:
                breaker.record_failure()
            raise RemoteError(
                f"{self._where()} answered {error.status}: {error.message}") from error
        except (httpx.HTTPError, TensorError) as error:
            breaker.record_failure()
            raise RemoteError(f"{self._where()}: {type(error).__name__}: {error}") from error
        except BaseException:  # cancelled, or rows the codec cannot send: no verdict
            breaker.release_probe(admitted_in)
            raise
        predictions = one_per_row(predictions)
        if predictions.ndim == 0 or predictions.shape[0] != rows.shape[0]:
            breaker.record_failure()
            raise RemoteError(f"{self._where()} returned shape {predictions.shape} for "
                              f"{rows.shape[0]} rows")
        breaker.record_success()
        return predictions

    def reset_breaker(self) -> None:
        """Forget past outcomes (after warm-up, as the stages' breakers do)."""
        self.breaker = self.model.breaker.build(self._clock)

    def signature(self) -> Signature:
        """Unknown width; the dtype sent, when ``datatype`` fixes it."""
        dtype = self._dtype.name if self._dtype is not None else "float64"
        return Signature(features=None, input_dtype=dtype)

    async def aclose(self) -> None:
        await self._client.aclose()

    def close(self) -> None:
        """Close the pool from sync code: scheduled on the running loop, if there is one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: nothing is in flight; the sockets close with the process
        if self._closing is None:
            self._closing = loop.create_task(self.aclose())

    def _where(self) -> str:
        return f"{self.model.model_name} at {self.model.url}"

    def __repr__(self) -> str:
        return (f"RemoteRunner({self.model.url!r}, {self.model.model_name!r}, "
                f"breaker={self.breaker.state})")

