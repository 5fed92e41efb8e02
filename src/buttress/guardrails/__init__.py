"""Guardrails: fixed- and sliding-window limits on what predictions hand out.

Declare limits with :class:`FixedWindow` / :class:`SlidingWindow` (re-exported as
``bt.FixedWindow`` / ``bt.SlidingWindow``); a service owns one :class:`Guardrails` evaluator
that checks whole batches against ``memory://`` or ``redis://`` and returns one
:class:`Decision` per request. What to do with a refused request (the fallback) is the
pipeline's business.

What is guaranteed (both backends run the same arithmetic, ``memory.py`` and ``lua.py``):

- **Units.** A cost is rounded to the nearest millionth and summed as an exact integer, so
  there is no float drift: 1,000 costs of 0.1 fit a limit of 100 exactly.
- **Admission.** A request's cost is admitted only if it fits *every* guardrail that applies
  to it (all-or-nothing); a refused request spends nothing; a batch is admitted in order.
  With Redis, one Lua script per batch does this atomically, on the server's clock, so any
  number of replicas together never overshoot.
- **Sliding window: exact.** At time ``t`` the use is the sum of costs admitted in
  ``(t - window, t]``; a request is admitted iff ``use + cost <= limit``. Hence *every*
  interval of length ``window`` holds at most ``limit`` (0 overshoot), and a request is refused
  only when it truly does not fit (no needless refusal). The price is a log of recent
  admissions: one entry per key per checked batch, dropped once it leaves the window.
- **Fixed window: exact per window, 2x across an edge.** Windows are aligned to the epoch
  (``index = t // window``); each holds at most ``limit``. A burst at the end of one window and
  another at the start of the next both fit: *any interval of length ``window`` that straddles
  an edge can hold up to 2x ``limit``*. Use a sliding window where that matters.
- **Outages.** When the backend is unreachable each applicable guardrail's ``fail`` policy
  decides ("closed" refuses, "open" admits), and the decision says ``unavailable``.
"""

from __future__ import annotations

from buttress.guardrails.decision import Decision, GuardrailSnapshot, Usage
from buttress.guardrails.evaluator import (
    Guardrails,
    GuardrailsUnavailable,
    warn_if_per_process,
)
from buttress.guardrails.policy import FixedWindow, Guardrail, SlidingWindow

__all__ = [
    "Decision",
    "FixedWindow",
    "Guardrail",
    "GuardrailSnapshot",
    "Guardrails",
    "GuardrailsUnavailable",
    "SlidingWindow",
    "Usage",
    "warn_if_per_process",
]
