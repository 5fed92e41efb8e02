"""The README's 5-minute tour, run as written against a real demo server.

Each ```bash block of the tour runs in bash (with ``localhost:8000`` pointed at the test's
server); what its ``# ...`` comments promise must show in its output: the status, every
``x-header: value`` named (a comma list must contain the named categories) and every response
body quoted in full. A README that drifts from the product fails here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.servers import DEMO, REPO, running_server

pytestmark = pytest.mark.slow

TOUR = re.compile(r"## A 5-minute tour\n(.*?)\n## ", re.S)
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
HEADER = re.compile(r"\b(x-[a-z-]+): ([a-z0-9_.,]+)")
BODY = re.compile(r"(\{\"order_id\".*?\}\]\})")
ADMIN_TOKEN = "secret"  # the tour's own example token


def tour_blocks() -> list[str]:
    tour = TOUR.search((REPO / "README.md").read_text())
    assert tour is not None, "the README lost its 5-minute tour"
    return BLOCK.findall(tour.group(1))


def promises(block: str) -> tuple[list[tuple[str, str]], list[str]]:
    comments = "\n".join(line for line in block.splitlines() if line.lstrip().startswith("#"))
    return HEADER.findall(comments), [b for b in BODY.findall(comments) if "..." not in b]


def test_the_readme_tour_does_what_it_says(tmp_path: Path) -> None:
    blocks = tour_blocks()
    assert len(blocks) >= 6
    env = {"BUTTRESS_ADMIN_TOKEN": ADMIN_TOKEN}
    with running_server(DEMO, tmp_path / "demo", env=env) as server:
        prelude = blocks[0].split("\n\n")[0]  # the B='...' order every block uses
        for block in blocks:
            script = prelude + "\n" + block.replace("localhost:8000", server.base_url[7:])
            result = subprocess.run(["bash", "-c", script], cwd=server.workdir,
                                    capture_output=True, text=True, timeout=30,
                                    env={"PATH": "/usr/bin:/bin", "BUTTRESS_ADMIN_TOKEN":
                                         ADMIN_TOKEN})
            output = result.stdout
            headers, bodies = promises(block)
            for name, values in headers:
                seen = re.findall(rf"(?im)^{name}: ([^\r\n]+)", output)
                assert seen, f"{name} missing after:\n{block}\n{output}"
                claimed = set(values.split(","))
                assert any(claimed <= set(v.split(",")) for v in seen), (block, output)
            for body in bodies:
                assert body in output, f"expected {body} after:\n{block}\n{output}"
            if "contract_violations" in block:
                assert 'kind="renamed"' in output
            if '"fields"' in block or "missing" in block:
                for field in ("order_id", "user.id", "sub_orders[0].sub_order_id",
                              "sub_orders[0].price"):
                    assert f'"field":"{field}"' in output, (block, output)
