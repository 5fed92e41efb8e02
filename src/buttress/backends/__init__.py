"""Storage backends chosen by URL: ``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``.

Backends know no domain: they hand out connections and name keys. A component (cache,
guardrails, features, registry) writes its strategy once per scheme against these connections,
the way the ``limits`` library separates algorithms from storage. Drivers are imported lazily,
so ``memory://`` needs nothing installed.
"""

from __future__ import annotations

from buttress.backends.connections import Connections
from buttress.backends.url import KNOWN_SCHEMES, BackendURL, parse_backend_url

__all__ = ["KNOWN_SCHEMES", "BackendURL", "Connections", "parse_backend_url"]
