"""The README's main command, end to end at reduced sizes through its own variables: demonstrations,
training, three evaluations and the report. The oracle's cell is at 100% and the untrained model's at 0%,
the cells that once made the whole report fail."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.ci
def test_embedded_default_end_to_end_writes_the_report(tmp_path, libero_assets):
    out = tmp_path / "embedded"
    env = {**os.environ, "OUT": str(out), "DEMOS": "2", "STAGE1_STEPS": "5", "STAGE2_STEPS": "10", "EVAL": "2"}
    done = subprocess.run(["bash", "benchmarks/embedded_default.sh"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for name in ("report.md", "report.html"):
        assert (out / "report" / name).stat().st_size > 0
    rates = {}
    for shard in (out / "episodes").glob("*.jsonl"):
        for line in shard.read_text().splitlines():
            record = json.loads(line)
            rates.setdefault(record["label"], []).append(record["success"])
    assert set(rates) == {"oracle", "lamp", "lamp-tiny-untrained"}
    assert all(len(v) == 2 for v in rates.values())
    assert all(rates["oracle"]), "the oracle's cell should be at 100%"
    assert not any(rates["lamp-tiny-untrained"]), "the untrained model's cell should be at 0%"
    markdown = (out / "report" / "report.md").read_text()
    assert "100.0" in markdown and "lamp-tiny-untrained" in markdown  # both extreme cells are in the report
