"""The discount demo lives in the package now: read it in :mod:`buttress.demo.service`.

This file stays as a pointer, and as the smallest file target there is: from a checkout,
``buttress serve examples/discount/service.py:svc`` serves the same service as ``buttress demo``.
"""

from buttress.demo.service import svc

__all__ = ["svc"]
