"""The discount demo that ``buttress demo`` serves: it ships in the package, so it runs from any
folder after ``pip install 'buttress[demo]'``.

- :mod:`buttress.demo.service`: the service (``buttress.demo.service:svc``)
- :mod:`buttress.demo.data`: its seeded synthetic users, products and orders
- :mod:`buttress.demo.model`: the feature rows that training and serving share
- :mod:`buttress.demo.train`: the two model versions, trained on first use
- :mod:`buttress.demo.traffic`: synthetic traffic to drive it, with a live display

Nothing in the rest of buttress imports this package. Its model needs scikit-learn, which the
core install leaves out (about 100 MB with SciPy, and serving does not need it): the ``demo``
extra brings it. This module imports nothing heavy, so the CLI can check for it cheaply.
"""

from __future__ import annotations

import importlib.util

INSTALL_HINT = "pip install 'buttress[demo]'"
REQUIREMENTS = {"sklearn": "scikit-learn", "joblib": "joblib"}  # module -> distribution


def missing_requirements() -> list[str]:
    """The demo's dependencies that are not installed (distribution names); empty if none."""
    return [dist for module, dist in REQUIREMENTS.items()
            if importlib.util.find_spec(module) is None]


def requirements_message(missing: list[str]) -> str:
    """One line: what is missing and the command that installs it."""
    return f"the demo needs {' and '.join(missing)}: {INSTALL_HINT}"
