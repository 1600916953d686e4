"""The site's long-lived ClientApp worker: one process per Flower run runs that run's tasks, one after another.

Flower starts a fresh ``flwr-clientapp`` process for every message, which imports torch and reads the cohort each
time. The site's SuperExec (``site_exec``) instead starts this worker for the first task of a run and writes each
task of the run to its stdin as one line, ``<token> <task_id> <acquired_epoch>``. The pipe's write end is held by
the SuperExec only: nothing else can hand the worker a task, and the token never appears on a command line.

Each task is what Flower's ``run_clientapp`` does, without exiting: a Runtime API client with the task's token, the
task's heartbeat, pull the message, context and FAB, then the site's app approval on the FAB's bytes (the allow-list
is read again for every task, so a revocation applies to the next message), install and load the app, call it,
push the reply and the task's output (the context, whose ``state`` the SuperNode keeps between tasks), stop the
heartbeat. A worker is bound to the first app it ran: the FAB is installed and the ClientApp imported once, and a
task of another app is refused (an error reply) and never loaded. An unapproved app is never installed or imported:
the coordinator gets an error reply naming its hash, the site's log the same line and how to approve it. A failing
task is answered with the error reply Flower would send, and the worker goes on with the next.

The worker ends at the end of its stdin (the SuperExec closed it or died), on SIGTERM or SIGINT (Flower's task
heartbeat raises SIGINT when the SuperNode ends a task), and when the SuperExec dies (the kernel's parent-death
signal). Flower's internals come from the seam (``fedfusion.flower_compat``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from flwr.app import Message
from flwr.clientapp import ClientApp

from fedfusion.deployment.process_guard import set_parent_death_signal
from fedfusion.deployment.site.app_approval import load_approvals
from fedfusion.errors import AppNotApprovedError, ConfigError, ProtocolError
from fedfusion.flower_compat import (
    TaskInput,
    clientapp_runtime_client,
    install_fab,
    load_client_app,
    pull_task_input,
    push_reply,
    push_task_output,
    start_task_heartbeat,
    task_error_reply,
    widen_object_transfers,
)

logger = logging.getLogger("fedfusion.site")
timeline = logging.getLogger("fedfusion.site.worker")


@dataclass(frozen=True)
class TaskLine:
    """One task as the SuperExec hands it to a worker: the task's Runtime API token, its id, when it was acquired."""

    token: str
    task_id: int
    acquired: float
    """Epoch seconds at which the SuperExec got the task from the SuperNode."""

    def encode(self) -> bytes:
        """The line written to the worker's stdin."""
        return f"{self.token} {self.task_id} {self.acquired:.3f}\n".encode("ascii")


def parse_task_line(line: str) -> TaskLine:
    """Read one stdin line; :class:`ProtocolError` (without the token) when it is not ``TOKEN TASK_ID EPOCH``."""
    fields = line.split()
    try:
        if len(fields) != 3 or not fields[0].isascii() or not fields[0].isprintable():
            raise ValueError
        return TaskLine(token=fields[0], task_id=int(fields[1]), acquired=float(fields[2]))
    except ValueError:
        raise ProtocolError(f"site worker: a task line must be 'TOKEN TASK_ID ACQUIRED_EPOCH', got {len(fields)} "
                            f"fields") from None


@dataclass
class _Times:
    """The task's timeline (epoch seconds), logged by :meth:`SiteWorker.run_task`."""

    acquired: float
    started: float
    pulled: float = 0.0
    handled: float = 0.0
    pushed: float = 0.0


class SiteWorker:
    """Runs the tasks of one Flower run at a site, bound to the first app it loads."""

    def __init__(self, runtime_api_address: str, approved_apps: Path, site: str, run_id: int) -> None:
        self.runtime_api_address = runtime_api_address
        self.approved_apps = approved_apps
        self.site = site
        self.run_id = run_id
        self.app_hash: str | None = None
        """The SHA-256 of the app this worker runs, once it has loaded it."""
        self._app: ClientApp | None = None

    def client_app(self, task: TaskInput) -> ClientApp:
        """The ClientApp of ``task``'s FAB if the site approves it now and it is the app this worker runs (installed
        and loaded on first use); :class:`AppNotApprovedError` or :class:`ProtocolError` otherwise, before any app
        file is written."""
        try:
            approvals = load_approvals(self.approved_apps)
        except ConfigError as exc:  # the detail names the site's files: log only
            logger.error("REFUSED: site %s cannot read its allow-list: %s", self.site, exc)
            raise AppNotApprovedError(f"site {self.site} cannot read its allow-list; every app is refused") from None
        try:
            fab_hash = approvals.check(self.site, task.fab)
        except AppNotApprovedError as exc:
            logger.error("REFUSED: %s (allow-list %s)", exc, approvals.source)
            raise
        if self._app is not None:
            if fab_hash != self.app_hash:
                logger.error("REFUSED: the worker of run %d runs app sha256:%s; a task of app sha256:%s is not "
                             "loaded", self.run_id, self.app_hash, fab_hash)
                raise ProtocolError(f"site {self.site}: run {self.run_id} runs app sha256:{self.app_hash}, not "
                                    f"sha256:{fab_hash}")
            return self._app
        logger.info("site %s: app sha256:%s is approved; installing and loading it for run %d", self.site, fab_hash,
                    self.run_id)
        install_fab(task.fab)
        self._app = load_client_app(task.fab_id, task.fab_version, task.fab_hash)
        self.app_hash = fab_hash
        return self._app

    def run_task(self, line: TaskLine) -> None:
        """Run one task to its end at the SuperNode; a failure is answered with Flower's error reply and logged."""
        times = _Times(acquired=line.acquired, started=time.time())
        client = clientapp_runtime_client(self.runtime_api_address, line.token)
        stop_heartbeat = start_task_heartbeat(client)
        task: TaskInput | None = None
        reply: Message | None = None
        failure: str | None = None
        try:
            try:
                task = pull_task_input(client)
                times.pulled = time.time()
                reply = self.client_app(task)(task.message, task.context)
            except Exception as exc:
                logger.error("task %d of run %d failed", line.task_id, self.run_id, exc_info=exc)
                failure = "ClientApp task failed: no message"
                if task is not None:
                    reply, failure = task_error_reply(task.message, exc)
            times.handled = time.time()
            if reply is not None and task is not None:
                try:
                    push_reply(client, reply, task.context)
                except Exception as exc:
                    logger.error("task %d of run %d: the reply could not be pushed", line.task_id, self.run_id,
                                 exc_info=exc)
            stop_heartbeat()  # first: once the task is finished, a heartbeat would be answered with a stop (SIGINT)
            push_task_output(client, task.context if task is not None else None, failure)
            times.pushed = time.time()
        finally:
            stop_heartbeat()
            client.close()
        message_type = task.message.metadata.message_type if task is not None else "none"
        timeline.info("timeline task=%d run=%d type=%s acquired=%.3f started=%.3f pulled=%.3f handled=%.3f "
                      "pushed=%.3f", line.task_id, self.run_id, message_type, times.acquired, times.started,
                      times.pulled, times.handled, times.pushed)

    def serve(self, tasks: TextIO) -> None:
        """Run every task line read from ``tasks`` in order, until its end."""
        for raw in iter(tasks.readline, ""):
            try:
                line = parse_task_line(raw)
            except ProtocolError as exc:
                logger.error("%s", exc)
                continue
            self.run_task(line)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    del frame
    logger.info("site worker (pid %d): signal %d, exiting", os.getpid(), signum)
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python -m fedfusion.deployment.site.site_worker`` (started by the site's SuperExec)."""
    parser = argparse.ArgumentParser(description="fedfusion's long-lived ClientApp worker (started by site_exec)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--approved-apps", type=Path, required=True)
    parser.add_argument("--site-name", required=True)
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True, help="the SuperExec's PID")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Runtime API call otherwise
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    set_parent_death_signal(signal.SIGTERM)
    widen_object_transfers()  # a message's three objects pulled, and the reply's pushed, at once
    if os.getppid() != args.parent_pid:  # the SuperExec died before the line above
        sys.exit(1)
    SiteWorker(args.runtime_api_address, args.approved_apps, args.site_name, args.run_id).serve(sys.stdin)


if __name__ == "__main__":
    main(sys.argv[1:])
