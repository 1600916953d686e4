"""A daemon's pid file (``processes.json`` in its state folder): what a killed predecessor left is stopped at start.

The file names the daemon and each process it started, by PID and start time (so a PID reused by an unrelated
process is never signalled). A daemon that stops cleanly removes it; a file found at start means the previous
daemon on this state folder was killed (SIGKILL, power loss): its processes that still run are stopped, trees and
all, before anything new starts. A daemon that still runs on the folder is never touched: the start is refused.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.deployment.process_guard import ProcessIdentity, stop_trees
from fedfusion.errors import ConfigError, CorruptStateError

logger = logging.getLogger("fedfusion.deployment")

PID_FILE = "processes.json"
PREDECESSOR_GRACE_S = 5.0
"""How long a predecessor's leftover process may take to stop after SIGTERM, before SIGKILL."""


@dataclass(frozen=True)
class DaemonProcesses:
    """A daemon and the processes it started (by role: ``supernode``, ``superlink``...)."""

    daemon: ProcessIdentity
    children: dict[str, ProcessIdentity]


def record_processes(state_dir: Path, children: dict[str, int]) -> None:
    """Write this daemon's pid file naming it and ``children`` (role -> PID) atomically."""
    me = ProcessIdentity.of(os.getpid())
    entries = {"daemon": me, **{role: ProcessIdentity.of(pid) for role, pid in children.items()}}
    text = json.dumps({role: None if identity is None else {"pid": identity.pid, "started": identity.started}
                       for role, identity in entries.items()}, indent=2)
    atomic_write_text(state_dir / PID_FILE, text + "\n")


def clear_processes(state_dir: Path) -> None:
    """Remove this daemon's pid file (a clean stop)."""
    (state_dir / PID_FILE).unlink(missing_ok=True)


def read_processes(state_dir: Path) -> DaemonProcesses | None:
    """The pid file's processes, or None when there is none; :class:`CorruptStateError` when it is malformed."""
    path = state_dir / PID_FILE
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CorruptStateError("the daemon's pid file", path, repr(exc), "remove it once no old process runs") \
            from exc
    try:
        identities = {role: ProcessIdentity(int(v["pid"]), int(v["started"])) for role, v in values.items() if v}
        daemon = identities.pop("daemon")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptStateError("the daemon's pid file", path, repr(exc), "remove it once no old process runs") \
            from exc
    return DaemonProcesses(daemon, identities)


def stop_predecessor(state_dir: Path, what: str) -> DaemonProcesses | None:
    """Stop what a killed ``what`` daemon left running on ``state_dir``; return its pid file (None: none was killed).

    :class:`ConfigError` when that daemon itself still runs (two daemons must not share a state folder).
    """
    previous = read_processes(state_dir)
    if previous is None:
        return None
    if previous.daemon.alive() and previous.daemon.pid != os.getpid():
        raise ConfigError(f"a {what} (pid {previous.daemon.pid}) already runs with state folder {state_dir}; "
                          "stop it first (SIGTERM)")
    left = {role: identity for role, identity in previous.children.items() if identity.alive()}
    logger.warning("the previous %s on %s (pid %d) did not stop cleanly%s", what, state_dir, previous.daemon.pid,
                   "; stopping what it left: " + ", ".join(f"{role} (pid {i.pid})" for role, i in left.items())
                   if left else "; none of its processes is left")
    stop_trees(left.values(), PREDECESSOR_GRACE_S)
    clear_processes(state_dir)
    return previous
