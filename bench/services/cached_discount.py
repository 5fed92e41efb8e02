"""The discount demo twice, identical but for a module-level response cache.

Both are the demo's own declarations (a shallow copy of its ``Service``: the same stages,
model, batcher, resources and responder). One change to both: the guardrails' limits are
raised to the maximum. wrk sends one order over and over, and the demo's per-user guardrail
(100 discounted orders an hour) would otherwise refuse all but the first hundred, turning the
benchmark into one of the default-prediction path. The guardrails are still checked on every
request, hits included, as they are in production.
"""

from __future__ import annotations

import copy
import dataclasses

import buttress as bt
from buttress.demo.service import svc as demo
from buttress.guardrails.policy import MAX_LIMIT


def without_limits(name: str, cache: bt.Cache | None) -> bt.Service:
    service = copy.copy(demo)
    service.name = name
    service.cache = cache
    service.guardrails = tuple(dataclasses.replace(g, limit=MAX_LIMIT) for g in demo.guardrails)
    return service


plain = without_limits("discount-bench", cache=None)
cached = without_limits("discount-cached", cache=bt.Cache(ttl="10m"))
