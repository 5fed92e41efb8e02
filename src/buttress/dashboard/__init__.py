"""The live dashboard served by buttress itself: ``GET /dashboard`` (docs/dashboard.md).

- :mod:`~buttress.dashboard.panels`: the metric panels, a pure function of two snapshots
- :mod:`~buttress.dashboard.charts`: the saved insight queries as charts
- :mod:`~buttress.dashboard.refresh`: when they run, in a low-priority process of their own
  (:mod:`~buttress.dashboard.query_worker`)
- :mod:`~buttress.dashboard.data`: the JSON document the page polls, from those, the registry
  and the alert state
- :mod:`~buttress.dashboard.routes`: the page, its files (``static/``) and the data route
"""

from buttress.dashboard.data import DashboardData
from buttress.dashboard.routes import dashboard_routes

__all__ = ["DashboardData", "dashboard_routes"]
