"""The site's SuperExec: takes ClientApp tasks from the local SuperNode and starts the gated app process.

Flower's ``flower-superexec`` starts ``flwr-clientapp`` (and would start agent, model or connector tasks too);
a fedfusion site runs its SuperNode with ``--isolation process`` and this loop instead, which asks only for
ClientApp tasks and starts ``fedfusion.deployment.site.app_gate`` for each, so no app runs unless the site approved
it. It talks to the SuperNode's Runtime API on 127.0.0.1 and exits when the SuperNode (``--parent-pid``) does.
Flower's Runtime API client comes from the seam (``fedfusion.flower_compat``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from fedfusion.flower_compat import (
    acquire_client_app_task,
    load_superexec_auth_secret,
    runtime_api_client,
    start_parent_process_monitor,
)

logger = logging.getLogger("fedfusion.site")

POLL_INTERVAL_S = 0.5


def gate_command(runtime_api_address: str, token: str, approved_apps: Path, site: str) -> list[str]:
    """The command line of one gated ClientApp process."""
    return [sys.executable, "-m", "fedfusion.deployment.site.app_gate", "--runtime-api-address", runtime_api_address,
            "--token", token, "--approved-apps", str(approved_apps), "--site-name", site,
            "--parent-pid", str(os.getpid())]


def run_site_exec(runtime_api_address: str, approved_apps: Path, site: str, parent_pid: int | None,
                  auth_secret: bytes | None) -> None:
    """Poll the SuperNode for ClientApp tasks and launch each in a gated process until stopped."""
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)  # raises SIGINT here when the SuperNode is gone
    client = runtime_api_client(runtime_api_address, auth_secret)
    running: list[subprocess.Popen[bytes]] = []
    try:
        while not stopping.is_set():
            task = acquire_client_app_task(client)
            if task is not None:
                logger.info("task %d of run %d: starting the gated ClientApp", task.task_id, task.run_id)
                running.append(subprocess.Popen(gate_command(runtime_api_address, task.token, approved_apps, site)))
            for process in [p for p in running if p.poll() is not None]:
                if process.returncode != 0:
                    logger.warning("ClientApp process %d exited with code %d", process.pid, process.returncode)
                running.remove(process)
            stopping.wait(POLL_INTERVAL_S)
    finally:
        for process in running:
            process.terminate()
        for process in running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        client.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python -m fedfusion.deployment.site.site_exec``."""
    parser = argparse.ArgumentParser(description="fedfusion's site SuperExec (started by `fedfusion site run`)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--approved-apps", type=Path, required=True)
    parser.add_argument("--site-name", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--superexec-auth-secret-file", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    run_site_exec(args.runtime_api_address, args.approved_apps, args.site_name, args.parent_pid,
                  load_superexec_auth_secret(args.superexec_auth_secret_file))


if __name__ == "__main__":
    main(sys.argv[1:])
