"""The soak (``bench/soak.py``) in its short CI form: the same run and checks, for ~25 s.

``make soak`` runs it for five minutes (SOAK_SECONDS); SOAK_CI_SECONDS sets this test's length.
The hostile traffic (issue 8) runs in it too: every kind must have been sent at least once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak_hostile import BODIES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.soak
def test_short_soak_keeps_every_invariant(tmp_path: Path) -> None:
    seconds = os.environ.get("SOAK_CI_SECONDS", "25")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(  # noqa: S603 - our own module, no shell
        [sys.executable, "-m", "bench.soak", "--seconds", seconds, "--senders", "24",
         "--workdir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=float(seconds) + 120,
        check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "invariants: ok" in run.stdout, output
    counts = dict(line.split(": ", 1) for line in run.stdout.splitlines()
                  if line.startswith(("exactly-once checked", "nothing-sent checked")))
    assert int(counts["exactly-once checked"]) > 100  # the load was real
    assert int(counts["nothing-sent checked"]) > 10  # and so were the faults
    hostile = {kind: int(count.split(" ", 1)[0]) for kind, count in (
        line[len("hostile "):].split(": ", 1) for line in run.stdout.splitlines()
        if line.startswith("hostile "))}
    kinds = {*BODIES, "aborted", "slow-headers", "slow-body", "idle", "bomb"}
    assert set(hostile) == kinds, output
    assert all(hostile[kind] > 0 for kind in kinds), hostile
    assert '/metrics: sms_requests_total{status="500"} 0,' in run.stdout, output
