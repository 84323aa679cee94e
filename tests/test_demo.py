"""`make demo` end to end, smaller: every recs process real, on the embedded stack.

The demo checks its own outcomes and exits non-zero when one fails (every view in Redis
exactly once, a model published, the learner's list refreshed by `recs update`, clean exits
on SIGTERM); this test runs it as a newcomer would and reads what it printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_demo_runs_the_whole_pipeline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECS_")}
    done = subprocess.run(
        [sys.executable, "-m", "recs.demo", "--out", str(tmp_path / "demo"),
         "--users", "3000", "--resources", "500", "--timeout", "90"],
        env=env, capture_output=True, text=True, timeout=280)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert re.search(r"checked: all 6,000 learners' hashes .* equal the extract exactly", out)
    assert re.search(r"en: published \S+: \d+ users, \d+ resources", out)
    assert out.count("Similar to ") == 3
    assert "consumed and folded in (no retrain)" in out
    # The experiment: two arms published, every impression and click counted, the report.
    assert "experiment demo started" in out
    assert re.search(r"6,000 impressions and [\d,]+ clicks sent, all counted exactly once", out)
    assert re.search(r"^\s+a\s+\d+\s+\d+\s+\d+\s+0\.\d+ \[", out, re.M)
    assert re.search(r"b - a: [+-]0\.\d+", out)
    assert "recs impressions: SIGTERM -> exit code 0" in out
    assert "recs consume: SIGTERM -> exit code 0" in out
    assert "recs update: SIGTERM -> exit code 0" in out
    # What it leaves behind: the extracts, the model files and each process's log.
    assert sorted(p.name for p in (tmp_path / "demo" / "models").iterdir())
    assert (tmp_path / "demo" / "logs" / "consume.log").stat().st_size > 0
