"""A small supervisor between a fedfusion daemon and each process it starts: nothing outlives the daemon.

``python -m fedfusion.deployment.supervisor --parent-pid PID -- COMMAND...`` runs COMMAND and, when COMMAND exits,
or when asked to stop (SIGTERM/SIGINT), or when the daemon that started it dies (even by SIGKILL: the kernel's
parent-death signal), stops COMMAND and then every process COMMAND started, however deep and in whatever session
(Flower's SuperLink starts a SuperExec in a session of its own, which starts ServerApps; a SuperNode's launcher
starts ClientApps). It is a child subreaper, so such grandchildren stay in its tree when their parent dies.
COMMAND itself gets SIGKILL should the supervisor die. The exit code is COMMAND's (128 + N after signal N).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from fedfusion.deployment.process_guard import (
    REAP_POLL_S,
    ProcessIdentity,
    become_subreaper,
    reap_children,
    set_parent_death_signal,
    stop_trees,
)
from fedfusion.deployment.processes import descendants

STOP_GRACE_S = 12.0
"""How long COMMAND may take to stop when the daemon asks (the daemon kills the lot after its own timeout)."""
ORPHANED_GRACE_S = 4.0
"""How long COMMAND may take to stop when the daemon is dead: the tree must be gone within seconds."""
LEFTOVER_GRACE_S = 2.0
"""How long what COMMAND left may take to stop after SIGTERM, before SIGKILL."""


def _die_with_supervisor() -> None:
    set_parent_death_signal(signal.SIGKILL)


def supervise(command: Sequence[str], parent_pid: int) -> int:
    """Run ``command`` until it exits or a stop is asked for; stop all it started; return its exit code."""
    set_parent_death_signal(signal.SIGTERM)
    become_subreaper()
    stop_asked: list[float] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        if not stop_asked:
            stop_asked.append(time.monotonic())

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if os.getppid() != parent_pid or stop_asked:  # the daemon died (or stopped us) before COMMAND started
        return 1
    # the supervisor has no thread of its own, so preexec_fn is safe here
    child = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, preexec_fn=_die_with_supervisor)
    code = _wait(child.pid, stop_asked, parent_pid)
    left = [identity for pid in descendants(os.getpid()) if (identity := ProcessIdentity.of(pid)) is not None]
    if left:
        stop_trees(left, LEFTOVER_GRACE_S)
    reap_children()
    return code


def _wait(child: int, stop_asked: list[float], parent_pid: int) -> int:
    """Wait for ``child`` (collecting adopted orphans meanwhile); SIGTERM it once a stop is asked, SIGKILL it after
    the grace period; return its exit code."""
    signalled = killed = False
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # cannot happen while the child runs; read as a failure
            return 1
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code
        if pid != 0:
            continue  # an adopted orphan that exited
        if stop_asked and not signalled:
            os.kill(child, signal.SIGTERM)
            signalled = True
        if stop_asked and not killed:
            grace = STOP_GRACE_S if os.getppid() == parent_pid else ORPHANED_GRACE_S
            if time.monotonic() - stop_asked[0] > grace:
                os.kill(child, signal.SIGKILL)
                killed = True
        time.sleep(REAP_POLL_S)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python -m fedfusion.deployment.supervisor --parent-pid PID -- COMMAND...``."""
    parser = argparse.ArgumentParser(description="runs one process for a fedfusion daemon; nothing outlives it")
    parser.add_argument("--parent-pid", type=int, required=True, help="the daemon's PID")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    sys.exit(supervise(command, args.parent_pid))


if __name__ == "__main__":
    main(sys.argv[1:])
