"""The Open Inference Protocol (KServe V2, REST): documents, tensor codec and a client.

buttress speaks it both ways: ``RemoteModel`` calls a model server with it, and a buttress
server answers it for its own model stages under ``/v2`` (see ``serving``).
"""

from buttress.oip.client import OipClient
from buttress.oip.codec import TensorError
from buttress.oip.errors import OipError
from buttress.oip.types import InferenceRequest, InferenceResponse, ModelMetadata

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "ModelMetadata",
    "OipClient",
    "OipError",
    "TensorError",
]
