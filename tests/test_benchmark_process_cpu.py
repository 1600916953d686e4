"""The deployment benchmark's CPU accounting (``benchmarks/process_cpu.py``): roles, live processes, per round."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from process_cpu import OTHER, cpu_by_role, per_round, role_of


def test_a_supervisor_is_told_from_the_process_it_runs() -> None:
    assert role_of("python -m fedfusion.deployment.supervisor --parent-pid 1 -- flower-superlink --port 1") == (
        "supervisors")
    assert role_of("/venv/bin/python /venv/bin/flower-superlink --port 1") == "SuperLink"
    assert role_of("/venv/bin/python -m fedfusion.deployment.coordinator.superlink_launch -- --port 1") == "SuperLink"
    assert role_of("python -m fedfusion.deployment.site.site_worker --run-id 3") == "site workers"
    assert role_of("python -m fedfusion.cli study start --state-dir s") == OTHER


def test_only_marked_processes_are_counted_and_a_round_is_the_difference(tmp_path: Path) -> None:
    marker = f"FEDFUSION_CPU_TEST={tmp_path}"
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                             "while time.process_time() < end: pass\ntime.sleep(60)"],
                            env={**os.environ, "FEDFUSION_CPU_TEST": str(tmp_path)})
    try:
        before = cpu_by_role(marker)
        deadline = time.monotonic() + 30
        while (after := cpu_by_role(marker)).get(OTHER, 0.0) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        busy.kill()
        busy.wait()
    assert set(after) == {OTHER}  # this test's process only: not pytest, not another's
    assert 0.25 <= per_round({1: before, 2: after}, [2])[OTHER] <= after[OTHER]
