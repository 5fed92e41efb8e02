"""PyTorch modules as runners: a CPU forward pass on the model threads, in inference mode.

Only reached when the user passed a ``torch.nn.Module``, so torch is already imported by then:
buttress itself never imports it (an optional extra). ``torch.inference_mode`` is thread-local,
so it is entered inside each call, on the model thread. Each model thread caps torch's
intra-op pool with ``torch.set_num_threads(native_threads)`` (torch bundles its own OpenMP
runtime, which ``threadpoolctl`` caps too, but torch keeps its own count).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from buttress.runners.threaded import ThreadRunner
from buttress.runners.types import Signature, one_per_row


def is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _set_torch_threads(threads: int) -> None:
    sys.modules["torch"].set_num_threads(threads)


class TorchRunner(ThreadRunner):
    """Runs ``module(tensor_of_rows)`` with the rows cast to the module's parameter dtype.

    The module is put in ``eval()`` mode once (dropout off, batch-norm statistics frozen);
    an ``(n, 1)`` output becomes ``(n,)``.
    """

    def __init__(self, module: Any, threads: int = 1, native_threads: int = 1) -> None:
        torch = sys.modules["torch"]
        module.eval()
        parameter = next(module.parameters(), None)
        self._dtype = parameter.dtype if parameter is not None else torch.float32
        self._numpy_dtype = torch.empty((), dtype=self._dtype).numpy().dtype
        self._torch = torch
        self.module: Any = module
        super().__init__(self._forward, threads, native_threads, setup=_set_torch_threads)
        self.model = module

    def _forward(self, rows: np.ndarray) -> np.ndarray:
        torch = self._torch
        batch = torch.from_numpy(np.ascontiguousarray(rows, dtype=self._numpy_dtype))
        with torch.inference_mode():
            predictions = self.module(batch)
        return one_per_row(predictions.numpy())

    def signature(self) -> Signature:
        """Row width from the first layer with ``in_features``, output width from the last
        with ``out_features`` (``nn.Linear`` and friends); unknown otherwise."""
        layers = list(self.module.modules())
        first = next((m for m in layers if isinstance(getattr(m, "in_features", None), int)),
                     None)
        last = next((m for m in reversed(layers)
                     if isinstance(getattr(m, "out_features", None), int)), None)
        width = last.out_features if last is not None else None
        dtype = self._numpy_dtype.name
        return Signature(
            features=first.in_features if first is not None else None,
            input_dtype=dtype, output_dtype=dtype,
            output_shape=(-1,) if width in (None, 1) else (-1, width))
