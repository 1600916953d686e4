"""Linux process hygiene: die with the parent, adopt orphans, know a process by PID and start time, stop a tree.

A process killed with SIGKILL runs no clean-up code, so its children must learn of its death from the kernel:
``prctl(PR_SET_PDEATHSIG)`` sends them a signal when the thread that started them ends, and
``prctl(PR_SET_CHILD_SUBREAPER)`` makes the orphans of a process's descendants its own children (instead of init's),
so they can still be found and stopped. Elsewhere than Linux these are no-ops.
A PID alone can be reused; a PID and the process's start time (``/proc/PID/stat``, field 22) name one process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fedfusion.deployment.processes import descendants

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
_PRCTL = _LIBC.prctl if _LIBC is not None else None
REAP_POLL_S = 0.1


def set_parent_death_signal(sig: signal.Signals) -> None:
    """Have the kernel send ``sig`` to this process when the thread that started it ends (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def become_subreaper(enabled: bool = True) -> None:
    """Adopt the orphans of this process's descendants (Linux only): they stay in its tree when their parent dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0)


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot); None when it is gone, a zombie, or there is no /proc."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass(frozen=True)
class ProcessIdentity:
    """One process: its PID and its start time (a PID reused by another process does not match)."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of the live process ``pid``, or None."""
        started = start_time(pid)
        return None if started is None else cls(pid, started)

    def alive(self) -> bool:
        """Whether this very process still runs."""
        return start_time(self.pid) == self.started


def stop_trees(roots: Iterable[ProcessIdentity], grace_s: float) -> list[int]:
    """SIGTERM each live root, its process group and its descendants; SIGKILL what is left after ``grace_s``.

    Returns the PIDs signalled. A root that is gone, or whose PID now names another process, is left alone.
    """
    targets = [root.pid for root in roots if root.alive()]
    pids = sorted({*targets, *(child for root in targets for child in descendants(root))})
    _signal_all(pids, targets, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(start_time(pid) is not None for pid in pids) and time.monotonic() < deadline:
        _reap(pids)
        time.sleep(REAP_POLL_S)
    _signal_all([pid for pid in pids if start_time(pid) is not None], targets, signal.SIGKILL)
    _reap(pids)
    return pids


def reap_children() -> list[int]:
    """Collect every child of this process that has exited (orphans adopted as a subreaper included)."""
    reaped: list[int] = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append(pid)


@contextlib.contextmanager
def no_new_descendants(grace_s: float) -> Iterator[None]:
    """Run the block as a subreaper; on leaving it, stop the descendants the block started and left running.

    Descendants that existed before the block are not touched. Their orphans are waited for up to ``grace_s``
    seconds (they may be finishing their own shutdown), then killed.
    """
    before = set(descendants(os.getpid()))
    become_subreaper()
    try:
        yield
    finally:
        deadline = time.monotonic() + grace_s
        while (left := _new_descendants(before)) and time.monotonic() < deadline:
            time.sleep(REAP_POLL_S)
        stop_trees([identity for pid in left if (identity := ProcessIdentity.of(pid)) is not None], grace_s)
        become_subreaper(False)


def _new_descendants(before: set[int]) -> list[int]:
    new = [pid for pid in descendants(os.getpid()) if pid not in before]
    _reap(new)
    return [pid for pid in new if start_time(pid) is not None]


def _reap(pids: Iterable[int]) -> None:
    """Collect those of ``pids`` that are exited children of this process (others are not ours to wait for)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _signal_all(pids: list[int], group_leaders: list[int], sig: signal.Signals) -> None:
    for pgid in group_leaders:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pgid) == pgid:
                os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
