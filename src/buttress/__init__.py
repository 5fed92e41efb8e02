"""buttress: resilient real-time ML prediction services.

    import buttress as bt

    class Order(bt.Input): ...
    svc = bt.Service("discount", input=Order, output=Discounts)
"""

__version__ = "0.1.0"

from buttress.batching import Batch
from buttress.cache import Cache
from buttress.config import Settings, load_settings
from buttress.features import FeatureStore, FeatureTable
from buttress.guardrails import FixedWindow, SlidingWindow
from buttress.interface import ContractViolation, Input, Output, field
from buttress.observability.alerts import AlertNotice
from buttress.pipeline.context import RequestContext
from buttress.pipeline.runtime import Runtime
from buttress.registry import FromRegistry, Registry
from buttress.resilience.breaker import Breaker
from buttress.resilience.categories import Category
from buttress.runners import RemoteModel
from buttress.service import Service
from buttress.stages import NO_FALLBACK

__all__ = [
    "NO_FALLBACK",
    "AlertNotice",
    "Batch",
    "Breaker",
    "Cache",
    "Category",
    "ContractViolation",
    "FeatureStore",
    "FeatureTable",
    "FixedWindow",
    "FromRegistry",
    "Input",
    "Output",
    "Registry",
    "RemoteModel",
    "RequestContext",
    "Runtime",
    "Service",
    "Settings",
    "SlidingWindow",
    "__version__",
    "field",
    "load_settings",
]
