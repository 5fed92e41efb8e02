"""ONNX Runtime sessions as runners: ``session.run`` on the model threads.

Only reached when the user passed an ``onnxruntime.InferenceSession``, so onnxruntime is
already imported by then: buttress itself never imports it (an optional extra).

Thread caps: ONNX Runtime has its own intra-op pool, sized when the session is created (by
default one thread per core, spinning while idle). On a small machine that pool fights the
event loop for the cores, as OpenMP did (see ``limit_native_threads``), so a session whose
pool differs from ``native_threads`` is re-created from the same model with
``intra_op_num_threads = native_threads``, one inter-op thread and no spinning.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

from buttress.runners.threaded import ThreadRunner
from buttress.runners.types import Signature, one_per_row

log = logging.getLogger("buttress.runners")

_TENSOR_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def is_onnx_session(model: Any) -> bool:
    ort = sys.modules.get("onnxruntime")
    return ort is not None and isinstance(model, ort.InferenceSession)


def with_intra_op_threads(session: Any, threads: int) -> Any:
    """``session``, or the same model re-created with an intra-op pool of ``threads``."""
    options = session.get_session_options()
    if options.intra_op_num_threads == threads:
        return session
    source = getattr(session, "_model_path", None) or getattr(session, "_model_bytes", None)
    if source is None:  # private attributes of onnxruntime's Python class; keep it as given
        log.warning("cannot re-create the ONNX session to cap its threads at %d; create it with "
                    "SessionOptions.intra_op_num_threads=%d", threads, threads)
        return session
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return sys.modules["onnxruntime"].InferenceSession(source, sess_options=options,
                                        providers=session.get_providers())


class OnnxRunner(ThreadRunner):
    """Runs an ``onnxruntime.InferenceSession`` with one input (the rows).

    Rows are cast to the input's element type; ``output`` names the output to return (the
    first by default, e.g. the label of a classifier); an ``(n, 1)`` output becomes ``(n,)``.
    """

    def __init__(self, session: Any, threads: int = 1, native_threads: int = 1, *,
                 output: str | None = None) -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ValueError(f"the ONNX model takes {len(inputs)} inputs ({names}); buttress "
                             "feeds one 2-D tensor of rows")
        self._input = inputs[0]
        dtype = _TENSOR_DTYPES.get(self._input.type)
        if dtype is None:
            raise ValueError(f"the ONNX model's input is {self._input.type}; supported: "
                             f"{', '.join(_TENSOR_DTYPES)}")
        self._dtype: type[np.generic] = dtype
        outputs = {o.name: o for o in session.get_outputs()}
        if output is not None and output not in outputs:
            raise ValueError(f"the ONNX model has no output {output!r}: {', '.join(outputs)}")
        self._output = outputs[output or next(iter(outputs))]
        self.session = with_intra_op_threads(session, native_threads)
        super().__init__(self._predict_rows, threads, native_threads)
        self.model = self.session

    def _predict_rows(self, rows: np.ndarray) -> np.ndarray:
        feed = {self._input.name: np.asarray(rows, dtype=self._dtype)}
        (predictions,) = self.session.run([self._output.name], feed)
        return one_per_row(np.asarray(predictions))

    def signature(self) -> Signature:
        shape = self._input.shape
        width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        out_shape = self._output.shape
        if len(out_shape) == 2 and out_shape[1] != 1:
            output_shape: tuple[int, ...] = (
                -1, out_shape[1] if isinstance(out_shape[1], int) else -1)
        else:
            output_shape = (-1,)
        return Signature(
            features=width, input_dtype=np.dtype(self._dtype).name,
            output_dtype=np.dtype(_TENSOR_DTYPES.get(self._output.type, np.float64)).name,
            output_shape=output_shape)
