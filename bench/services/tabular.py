"""The discount demo's pipeline for the bench: ``svc`` batches, ``svc_unbatched`` does not.

    buttress serve bench/services/tabular.py:svc            # bt.Batch(max_size=64, max_wait="2ms")
    buttress serve bench/services/tabular.py:svc_unbatched

The demo's own stage functions, input and output models, feature store and model, declared
again so batching can be switched: user and product features from the feature store, the
HistGradientBoosting model behind a timeout, the demo's breaker and its default prediction.

Two departures from the demo, both so that a run measures the batching path rather than its
fallbacks: the guardrails are left out (at bench rates the discount-value budget trips within
seconds), and the model timeout is ``MODEL_TIMEOUT`` (1 s) rather than 100 ms. On a shared
two-core machine a neighbour stalls the server's core for 100 ms now and then; with batching,
one such stall times out a whole batch (up to 64 requests) at once, the breaker (5
consecutive failures) opens, and the next 5 s are served as fallbacks.
"""

from __future__ import annotations

import buttress as bt
from buttress.demo import service as demo
from buttress.demo.data import PRODUCT_DEFAULTS, USER_DEFAULTS
from buttress.demo.train import load_model

MODEL = load_model(demo.MODEL_VERSION)
BATCH = bt.Batch(max_size=64, max_wait="2ms")
MODEL_TIMEOUT = "1s"


def build(name: str, batch: bt.Batch | None) -> bt.Service:
    service = bt.Service(name, input=demo.Order, output=demo.Discounts, example=demo.EXAMPLE,
                         description="The discount demo without guardrails (bench).")
    service.resource(demo.features)
    service.stage(timeout="30ms", fallback=lambda order: dict(USER_DEFAULTS),
                  category=bt.Category.FEATURES_UNAVAILABLE)(demo.user_features)
    service.stage(timeout="30ms",
                  fallback=lambda order: [PRODUCT_DEFAULTS] * len(order.sub_orders),
                  category=bt.Category.FEATURES_UNAVAILABLE)(demo.product_features)
    service.model(model=MODEL, version=demo.MODEL_VERSION, timeout=MODEL_TIMEOUT,
                  fallback=demo.default_discounts,
                  breaker=bt.Breaker(consecutive_failures=5, open_for="5s"),
                  batch=batch)(demo.discount_model)
    service.respond(demo.respond)
    return service


svc = build("bench-tabular", BATCH)
svc_unbatched = build("bench-tabular", None)
