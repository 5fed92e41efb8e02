"""The configuration examples of docs/observability.md are valid settings."""

from __future__ import annotations

import re
from pathlib import Path

from buttress.config import load_settings
from buttress.observability.exports import prometheus_rules

DOC = Path(__file__).resolve().parents[1] / "docs" / "observability.md"


def test_every_toml_example_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    config = tmp_path / "buttress.toml"
    for block in blocks:
        config.write_text(block)
        settings = load_settings(config)
    assert [rule.name for rule in settings.alerts] == [
        "large_discounts", "model_errors", "slow_p99", "loop_lag"]
    assert "large_discounts: " in prometheus_rules(settings.alerts)  # listed, not exported
