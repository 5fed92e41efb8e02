"""docs/reliability.md names only tests that exist: every test id in its tables is a test
function (or class) defined in the file it names."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
DOC = TESTS.parent / "docs" / "reliability.md"
TEST_ID = re.compile(r"`((?:reliability/)?test_\w+\.py)::(\w+)`")


def test_every_test_id_in_the_table_exists() -> None:
    ids = TEST_ID.findall(DOC.read_text())
    assert len(ids) >= 30
    for path, name in ids:
        source = (TESTS / path).read_text()
        defined = re.search(rf"^(?:async def|def|class) {name}\b|^{name} = ", source, re.M)
        assert defined, f"docs/reliability.md names {path}::{name}, which does not exist"


def test_every_reliability_test_is_in_the_table() -> None:
    named = {name for _, name in TEST_ID.findall(DOC.read_text())}
    for path in sorted((TESTS / "reliability").glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        for name in re.findall(r"^(?:async def|def) (test_\w+)", path.read_text(), re.M):
            assert name in named, f"{path.name}::{name} is missing from docs/reliability.md"
