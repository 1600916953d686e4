"""The site's SuperExec: takes ClientApp tasks from the local SuperNode and hands each to its run's site worker.

Flower's ``flower-superexec`` starts a fresh ``flwr-clientapp`` for every task (and would start agent, model or
connector tasks too); a fedfusion site runs its SuperNode with ``--isolation process`` and this loop instead, which
asks only for ClientApp tasks: when its SuperNode wakes it because a message has arrived whole
(``task_wake.py``), and at least every ``task_wake.FALLBACK_POLL_S`` (an idle site costs almost nothing). For the
first task of a Flower run it starts
a long-lived worker (``fedfusion.deployment.site.site_worker``) and writes that task and every later task of the run
to the worker's stdin, one line each; the worker checks every task's app against the site's allow-list before
anything of it is installed. A worker that died is logged with its exit code and replaced at the next task of its
run (the task it was running is lost: the SuperNode answers it with Flower's "ClientApp crashed" error once its
token expires, and the study treats the site as dropped there); a worker without a task for `WORKER_IDLE_TIMEOUT_S`
is stopped, and all are stopped, by PID, when this process stops. It talks to the SuperNode's Runtime API on
127.0.0.1 and exits when the SuperNode (``--parent-pid``) does. Flower's Runtime API client comes from the seam
(``fedfusion.flower_compat``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from fedfusion.deployment.site.site_worker import TaskLine
from fedfusion.deployment.site.task_wake import FALLBACK_POLL_S, TaskWakeListener
from fedfusion.flower_compat import (
    AcquiredTask,
    acquire_client_app_task,
    load_superexec_auth_secret,
    runtime_api_client,
    start_parent_process_monitor,
)

logger = logging.getLogger("fedfusion.site")

WORKER_IDLE_TIMEOUT_S = 1800.0
"""A run's worker is stopped after this long without a task (a run has ended, or waits for a long time)."""
WORKER_STOP_TIMEOUT_S = 10.0


def worker_command(runtime_api_address: str, approved_apps: Path, site: str, run_id: int) -> list[str]:
    """The command line of a run's site worker (no token: tasks come on its stdin)."""
    return [sys.executable, "-m", "fedfusion.deployment.site.site_worker", "--runtime-api-address",
            runtime_api_address, "--approved-apps", str(approved_apps), "--site-name", site, "--run-id", str(run_id),
            "--parent-pid", str(os.getpid())]


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    last_task: float
    """``time.monotonic()`` when it was last handed a task."""


class SiteWorkers:
    """The site's workers, one per Flower run, started on demand and stopped by PID."""

    def __init__(self, runtime_api_address: str, approved_apps: Path, site: str,
                 idle_timeout_s: float = WORKER_IDLE_TIMEOUT_S) -> None:
        self.runtime_api_address = runtime_api_address
        self.approved_apps = approved_apps
        self.site = site
        self.idle_timeout_s = idle_timeout_s
        self.workers: dict[int, _Worker] = {}

    def hand(self, task: AcquiredTask, acquired: float) -> None:
        """Give ``task`` to its run's worker, starting one if the run has none (or its worker died)."""
        line = TaskLine(token=task.token, task_id=task.task_id, acquired=acquired).encode()
        worker = self.workers.get(task.run_id)
        if worker is not None and worker.process.poll() is None:
            try:
                self._write(worker, line)
                return
            except BrokenPipeError:  # it is exiting
                self._stop([worker])
        if worker is not None:
            self._forget_dead(task.run_id, worker)
        process = subprocess.Popen(worker_command(self.runtime_api_address, self.approved_apps, self.site,
                                                  task.run_id), stdin=subprocess.PIPE)
        logger.info("run %d: started its site worker (pid %d)", task.run_id, process.pid)
        self.workers[task.run_id] = worker = _Worker(process, time.monotonic())
        self._write(worker, line)

    def tend(self) -> None:
        """Forget workers that died (logged with their exit code) and stop those idle for too long."""
        now = time.monotonic()
        for run_id, worker in list(self.workers.items()):
            if worker.process.poll() is not None:
                self._forget_dead(run_id, worker)
            elif now - worker.last_task > self.idle_timeout_s:
                logger.info("run %d: no task for %.0f s, stopping its site worker (pid %d)", run_id,
                            now - worker.last_task, worker.process.pid)
                self._stop([worker])
                del self.workers[run_id]

    def stop_all(self) -> None:
        """Stop every worker (end of stdin and SIGTERM, SIGKILL after a grace period), by PID."""
        self._stop(list(self.workers.values()))
        self.workers.clear()

    @staticmethod
    def _write(worker: _Worker, line: bytes) -> None:
        assert worker.process.stdin is not None
        worker.process.stdin.write(line)
        worker.process.stdin.flush()
        worker.last_task = time.monotonic()

    def _forget_dead(self, run_id: int, worker: _Worker) -> None:
        logger.warning("run %d: its site worker (pid %d) exited with code %s; the next task of the run starts a new "
                       "one", run_id, worker.process.pid, worker.process.returncode)
        if worker.process.stdin is not None:
            worker.process.stdin.close()
        del self.workers[run_id]

    @staticmethod
    def _stop(workers: list[_Worker]) -> None:
        for worker in workers:
            if worker.process.stdin is not None:
                worker.process.stdin.close()  # an idle worker ends at the end of its stdin
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in workers:
            try:
                worker.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def run_site_exec(runtime_api_address: str, approved_apps: Path, site: str, parent_pid: int | None,
                  auth_secret: bytes | None, task_wake_socket: Path) -> None:
    """Ask the SuperNode for ClientApp tasks when it wakes this process at ``task_wake_socket`` (and at least every
    `FALLBACK_POLL_S`) and hand each to its run's worker until stopped."""
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)  # raises SIGINT here when the SuperNode is gone
    wake = TaskWakeListener(task_wake_socket)
    client = runtime_api_client(runtime_api_address, auth_secret)
    workers = SiteWorkers(runtime_api_address, approved_apps, site)
    try:
        while not stopping.is_set():
            task = acquire_client_app_task(client)
            if task is not None:
                acquired = time.time()
                logger.info("task %d of run %d acquired at %.3f", task.task_id, task.run_id, acquired)
                workers.hand(task, acquired)
                continue  # another task may be waiting
            workers.tend()
            wake.wait(FALLBACK_POLL_S)
    finally:
        workers.stop_all()
        client.close()
        wake.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python -m fedfusion.deployment.site.site_exec``."""
    parser = argparse.ArgumentParser(description="fedfusion's site SuperExec (started by `fedfusion site run`)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--approved-apps", type=Path, required=True)
    parser.add_argument("--site-name", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--superexec-auth-secret-file", default=None)
    parser.add_argument("--task-wake-socket", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    run_site_exec(args.runtime_api_address, args.approved_apps, args.site_name, args.parent_pid,
                  load_superexec_auth_secret(args.superexec_auth_secret_file), args.task_wake_socket)


if __name__ == "__main__":
    main(sys.argv[1:])
