"""``as_runner``: from what the user declared as the model to a :class:`Runner`.

ONNX Runtime and PyTorch are optional: an object is recognised as a session or a module only
when its library is already imported (it must be, for the object to exist), so buttress
never imports either just to look.
"""

from __future__ import annotations

import asyncio
from typing import Any

from buttress.runners.onnx import OnnxRunner, is_onnx_session
from buttress.runners.pytorch import TorchRunner, is_torch_module
from buttress.runners.threaded import ThreadRunner
from buttress.runners.types import ModelDeclaration, Predictor, Runner


def as_runner(model: Any, threads: int = 1, native_threads: int = 1) -> Runner:
    """Wrap what a user declared as the model into a :class:`Runner`.

    In order: a declaration (``RemoteModel``) builds a fresh runner; an object with an async
    ``run`` is a runner already; an ``onnxruntime.InferenceSession`` and a ``torch.nn.Module``
    get their own runners; anything with ``.predict`` (scikit-learn, LightGBM) or a function
    of rows runs on the model threads. ``threads`` sizes the model thread pool and
    ``native_threads`` caps the native (OpenMP, BLAS, ONNX Runtime, torch) threads of each.
    """
    if isinstance(model, ModelDeclaration):
        return model.build_runner(threads, native_threads)
    if hasattr(model, "run") and asyncio.iscoroutinefunction(model.run):
        return model  # type: ignore[no-any-return]
    if is_onnx_session(model):
        return OnnxRunner(model, threads, native_threads)
    if is_torch_module(model):
        return TorchRunner(model, threads, native_threads)
    if isinstance(model, Predictor) or callable(model):
        return ThreadRunner(model, threads, native_threads)
    raise TypeError(
        f"cannot run {model!r}: give an object with .predict(rows), a function of rows, an "
        "onnxruntime.InferenceSession, a torch.nn.Module, a bt.RemoteModel, or a Runner with "
        "an async .run(rows)"
    )
