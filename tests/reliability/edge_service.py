"""The guarded test service (tests/services/guarded_service.py) with one-second windows, for
the clock-skew test: ``buttress serve tests/reliability/edge_service.py:svc``.

A claim's ``user`` picks the guardrail it meets: ``fixed`` a :data:`FIXED` window, ``sliding``
a :data:`SLIDING` one, both :data:`LIMIT` claims a second (the ``EDGE_LIMIT`` environment
variable). Every claim also meets :data:`RECORDER`, a sliding window that never refuses
(limit ``MAX_LIMIT``, ten minutes): admissions are all-or-nothing, so it admits exactly what
the guardrail under test admits, and its log in Redis keeps the server timestamp and cost of
every admitted batch — the record the test checks. ``EDGE_SERVICE_NAME`` names the service
(its Redis namespace).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import buttress as bt
from buttress.guardrails.policy import MAX_LIMIT
from tests.services.guarded_service import Claim, guarded_service, user_of

FIXED = "edge_fixed"
SLIDING = "edge_sliding"
RECORDER = "edge_recorder"
WINDOW = "1s"
LIMIT = int(os.environ.get("EDGE_LIMIT", "10"))


def only(user: str) -> Callable[[Claim], str | None]:
    def key(claim: Claim) -> str | None:
        return claim.user if claim.user == user else None

    return key


served = guarded_service(
    os.environ.get("EDGE_SERVICE_NAME", "edge"),
    [bt.FixedWindow(FIXED, LIMIT, WINDOW, key=only("fixed")),
     bt.SlidingWindow(SLIDING, LIMIT, WINDOW, key=only("sliding")),
     bt.SlidingWindow(RECORDER, MAX_LIMIT, "10min", key=user_of)])
svc = served.svc
