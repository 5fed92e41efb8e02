"""One request through the service: the runtime (lifecycle, one event per request), the engine
that schedules stages by dependency level, the stage module that alone owns breaker, timeout,
deadline and fallback, and the response-cache and guardrail gates.

Knows no HTTP: the same pipeline serves ``/predict``, ``/v2`` and any other transport.
"""
