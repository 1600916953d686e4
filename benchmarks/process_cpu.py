"""CPU time of the deployment benchmark's processes, by role (``deployment_overhead.py``).

A round's wall time on a shared host depends on what else runs there; the CPU seconds each process used during the
round depend on it much less (they still grow with it: a slower round holds more polls, and contention makes each
request cost more). The benchmark takes a snapshot at the end of each round (``cpu_by_role``): every live process whose
environment carries the benchmark's marker (its work folder, inherited by every process it starts, down to the
ServerApp and the site workers), its user + system time from ``/proc/PID/stat``, summed per role. ``per_round``
turns consecutive snapshots into CPU seconds per round. A process that ends between two snapshots is not counted
(none of the benchmark's processes does during rounds 2 and later). Linux only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

ROLES = (
    ("fedfusion.deployment.supervisor", "supervisors"),
    ("flower-superlink", "SuperLink"),
    ("superlink_launch", "SuperLink"),
    ("flwr-serverapp", "ServerApp"),
    ("flower-superexec", "coordinator SuperExec"),
    ("coordinator run", "coordinator daemon (gateway)"),
    ("supernode_launch", "site SuperNodes"),
    ("site_exec", "site SuperExecs"),
    ("site_worker", "site workers"),
    ("site run", "site daemons"),
)
"""A text of the command line -> its role; the first that matches (a supervisor's command line holds its child's)."""
OTHER = "other (study start, flwr run)"


def role_of(command_line: str) -> str:
    """The role of a process by its command line (`ROLES`), `OTHER` for none."""
    return next((role for text, role in ROLES if text in command_line), OTHER)


def cpu_by_role(marker: str, proc: Path = Path("/proc")) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the live processes whose environment holds ``marker``, by role."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile, or not ours to read
            continue
        role = role_of(command_line)
        totals[role] = totals.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return totals


def per_round(snapshots: Mapping[int, Mapping[str, float]], rounds: Sequence[int]) -> dict[str, float]:
    """Mean CPU seconds per round, by role, over ``rounds`` (each from the previous round's snapshot to its own)."""
    roles = sorted({role for r in rounds for role in snapshots[r]})
    return {role: sum(snapshots[r].get(role, 0.0) - snapshots[r - 1].get(role, 0.0) for r in rounds) / len(rounds)
            for role in roles}
