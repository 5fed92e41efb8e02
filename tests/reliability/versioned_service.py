"""The registry scorer (tests/services/registry_model.py: version k answers ``k x sum(x)``,
so every answer says which version computed it) with a response cache, following the alias
``VERSIONED_ALIAS`` (default ``stable``): one replica may serve ``candidate`` while another
serves ``stable``, both reading and writing one Redis cache under one service name.

    buttress serve tests/reliability/versioned_service.py:svc
"""

from __future__ import annotations

import os

from tests.services.registry_model import make_service

svc = make_service("versioned", cache=True, alias=os.environ.get("VERSIONED_ALIAS", "stable"))
