"""Model runners: the one seam between buttress and a model (see ``types``).

Rows in (a 2-D NumPy array), one prediction per row out. In-process models run on a small
thread pool (``threaded``, ``onnx``, ``pytorch``); a model on a model server is reached over
the Open Inference Protocol (``remote``). ``as_runner`` picks one for what the user declared.
"""

from buttress.runners.choose import as_runner
from buttress.runners.onnx import OnnxRunner
from buttress.runners.pytorch import TorchRunner
from buttress.runners.remote import (
    RemoteError,
    RemoteModel,
    RemoteRunner,
    RemoteTimeout,
    RemoteUnavailable,
)
from buttress.runners.threaded import ThreadRunner, limit_native_threads
from buttress.runners.types import Described, ModelDeclaration, Predictor, Runner, Signature

__all__ = [
    "Described",
    "ModelDeclaration",
    "OnnxRunner",
    "Predictor",
    "RemoteError",
    "RemoteModel",
    "RemoteRunner",
    "RemoteTimeout",
    "RemoteUnavailable",
    "Runner",
    "Signature",
    "ThreadRunner",
    "TorchRunner",
    "as_runner",
    "limit_native_threads",
]
