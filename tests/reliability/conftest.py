"""Every test under ``tests/reliability/`` carries the ``reliability`` marker, so a quick local
run skips them with ``-m "not slow and not reliability"``; CI runs them all."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.reliability)
