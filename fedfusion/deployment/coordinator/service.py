"""``fedfusion coordinator run``: the SuperLink on loopback, the Fleet gateway on the network, registry sync.

In the foreground, until SIGTERM/SIGINT:
1. a fresh loopback TLS certificate; ``flower-superlink`` (through ``superlink_launch.py``, its start-up heap frozen)
   with TLS, SuperNode authentication, its database in the state folder and runtime dependency installation off,
   bound to 127.0.0.1 only;
2. the consortium registry's active site keys registered at the SuperLink and every other key unregistered,
   again whenever ``registry.json`` changes (so ``fedfusion provision rotate/revoke`` takes effect at once);
3. the Fleet gateway (``fedfusion.deployment.coordinator.fleet_gateway``) with the consortium certificate on HOST:PORT;
   it holds a site's pull that finds no message until the ServerApp's push notice (``held_pulls.py``; the socket's
   path reaches the ServerApps in the SuperLink's environment) and tells the ServerApps when a site hands in a reply
   (``reply_broadcast.py``);
4. once the gateway serves, the studies that were running when the coordinator stopped are resubmitted
   (``study_resume.py``; they resume at the round after their checkpoint), unless ``resume_studies`` is off.
On SIGTERM the gateway stops, then the resubmissions, then the SuperLink (and its SuperExec); the exit code is 0.
If the SuperLink dies, the gateway stops and the exit code is 1.
The SuperLink and the resubmissions run under ``fedfusion.deployment.supervisor``: they, the SuperExec and its
ServerApps stop when the daemon dies, SIGKILL included. ``processes.json`` in the state folder (``pid_file.py``) lets
the next start stop whatever a killed daemon left; a port another process holds is named with its option.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import uvicorn

from fedfusion.deployment.coordinator.fleet_gateway import HEALTH_PATH, GatewayLimits, gateway_server
from fedfusion.deployment.coordinator.held_pulls import push_notice_path
from fedfusion.deployment.coordinator.loopback_tls import make_loopback_tls
from fedfusion.deployment.coordinator.registry_sync import sync_registry
from fedfusion.deployment.coordinator.reply_broadcast import reply_notice_dir
from fedfusion.deployment.coordinator.state import (
    CoordinatorPaths,
    DaemonInfo,
    clear_daemon_info,
    running_daemon,
    write_cli_connection,
    write_daemon_info,
)
from fedfusion.deployment.coordinator.study_resume import StudyResumer
from fedfusion.deployment.coordinator.study_state import interrupted_studies
from fedfusion.deployment.coordinator.superlink_control import SuperLinkControl
from fedfusion.deployment.coordinator.superlink_launch import launch_command as superlink_command
from fedfusion.deployment.pid_file import clear_processes, record_processes, stop_predecessor
from fedfusion.deployment.processes import check_port_free, flower_env, start_process, stop_process
from fedfusion.errors import ConfigError
from fedfusion.protocol import PUSH_NOTICE_SOCKET_ENV, REPLY_NOTICE_DIR_ENV
from fedfusion.provisioning.consortium import COORDINATOR_DIR, SUPERLINK_CERT_FILE, SUPERLINK_KEY_FILE
from fedfusion.provisioning.registry import REGISTRY_FILE, load_registry

logger = logging.getLogger("fedfusion.coordinator")

DEFAULT_SUPERLINK_PORT = 9093
START_TIMEOUT_S = 90.0
REGISTRY_POLL_S = 2.0


@dataclass(frozen=True)
class CoordinatorOptions:
    """Where the coordinator keeps its state and where it listens."""

    consortium_dir: Path
    state_dir: Path
    host: str
    port: int | None = None
    """The gateway's port; default: the registry's coordinator port."""
    superlink_port: int = DEFAULT_SUPERLINK_PORT
    """The SuperLink's loopback port."""
    resume_studies: bool = True
    """Resubmit the studies interrupted by the last stop once the gateway serves (else only log them)."""
    gateway_limits: GatewayLimits = field(default_factory=GatewayLimits)
    """Request body size and connections per client address the gateway allows."""


def run_coordinator(options: CoordinatorOptions) -> int:
    """Run the coordinator until stopped; return the process exit code."""
    paths = CoordinatorPaths(options.state_dir)
    if running_daemon(paths) is not None:
        raise ConfigError(f"a coordinator already runs with state folder {options.state_dir}")
    registry = load_registry(options.consortium_dir)
    cert_dir = options.consortium_dir / COORDINATOR_DIR
    certfile, keyfile = cert_dir / SUPERLINK_CERT_FILE, cert_dir / SUPERLINK_KEY_FILE
    for path in (certfile, keyfile):
        if not path.is_file():
            raise ConfigError(f"coordinator TLS file {path} is missing (made by `fedfusion provision init`)")
    port = options.port if options.port is not None else registry.coordinator_port
    push_notices = push_notice_path(options.state_dir)
    reply_notices = reply_notice_dir(options.state_dir)
    stop_predecessor(options.state_dir, "coordinator")
    check_port_free("127.0.0.1", options.superlink_port, "--superlink-port")
    check_port_free(options.host, port, "--port" if options.port is not None else
                    f"--port, default: the registry's coordinator port in {options.consortium_dir / REGISTRY_FILE}")
    lifecycle = _Lifecycle()
    lifecycle.handle_signals()  # from here on SIGTERM means: stop what has started, in order
    tls = make_loopback_tls(paths.loopback_dir)
    superlink_address = f"127.0.0.1:{options.superlink_port}"
    write_cli_connection(paths, superlink_address, tls.ca_file)
    superlink = start_process(
        superlink_command(["--ssl-ca-certfile", str(tls.ca_file), "--ssl-certfile", str(tls.cert_file),
                           "--ssl-keyfile", str(tls.key_file), "--enable-supernode-auth", "--database",
                           str(paths.database), "--host", "127.0.0.1", "--port", str(options.superlink_port),
                           "--disable-runtime-dependency-installation"]),
        paths.logs_dir / "superlink.log",
        {**flower_env(paths.flwr_home), PUSH_NOTICE_SOCKET_ENV: str(push_notices),
         REPLY_NOTICE_DIR_ENV: str(reply_notices)})
    record_processes(options.state_dir, {"superlink": superlink.pid})
    logger.info("SuperLink (pid %d) on %s, database %s", superlink.pid, superlink_address, paths.database)
    try:
        _wait_until_healthy(f"https://{superlink_address}", tls.ca_file, superlink.poll, lifecycle.stop)
        if lifecycle.stop.is_set():
            return 0  # stopped during start-up (the SuperLink is stopped below)
        control = SuperLinkControl(superlink_address, tls.ca_file)
        resumer = StudyResumer(paths) if options.resume_studies else None
        try:
            sync_registry(options.consortium_dir, control)
            if not options.resume_studies:
                for study in interrupted_studies(paths):
                    logger.warning("study %s was running when the coordinator stopped; resubmit it with "
                                   "`fedfusion study start --state-dir %s --resubmit %s`", study, options.state_dir,
                                   study)
            lifecycle.server = gateway_server(f"https://{superlink_address}", tls.ca_file, options.host, port,
                                              certfile, keyfile, options.consortium_dir, options.gateway_limits,
                                              push_notices, reply_notices)
            info = DaemonInfo(pid=os.getpid(), superlink_address=superlink_address,
                              gateway_address=f"{options.host}:{port}",
                              consortium_dir=str(options.consortium_dir.resolve()), loopback_ca_file=str(tls.ca_file))
            watcher = threading.Thread(target=_watch, name="coordinator-watch", daemon=True,
                                       args=(options.consortium_dir, control, superlink.poll, lifecycle, paths, info,
                                             resumer))
            watcher.start()
            if not lifecycle.stop.is_set():
                lifecycle.server.run()  # returns on SIGTERM/SIGINT or when the watcher sees the SuperLink die
            lifecycle.stop.set()
            watcher.join(timeout=10)
        finally:
            if resumer is not None:
                resumer.stop()  # before the SuperLink: an interrupted study stays `running`, resumed at next start
            control.close()
    finally:
        lifecycle.stop.set()
        clear_daemon_info(paths)
        code = stop_process(superlink)
        clear_processes(options.state_dir)
        logger.info("SuperLink stopped (exit code %d)", code)
    return 1 if lifecycle.superlink_died.is_set() else 0


class _Lifecycle:
    """The daemon's stop signal, shared by the signal handler, the watcher and the gateway."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.superlink_died = threading.Event()
        self.server: uvicorn.Server | None = None

    def request_stop(self) -> None:
        """Stop the gateway (if serving) and everything after it."""
        self.stop.set()
        if self.server is not None:
            self.server.should_exit = True

    def handle_signals(self) -> None:
        """SIGTERM/SIGINT request a stop. Installed before uvicorn's own: uvicorn re-raises the signal after its
        shutdown, which then lands here instead of killing the process before the SuperLink is stopped."""

        def handle(signum: int, frame: FrameType | None) -> None:
            del frame
            if not self.stop.is_set():
                logger.info("signal %d: stopping the gateway, then the SuperLink", signum)
            self.request_stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def _watch(consortium_dir: Path, control: SuperLinkControl, superlink_poll: Callable[[], int | None],
           lifecycle: _Lifecycle, paths: CoordinatorPaths, info: DaemonInfo, resumer: StudyResumer | None) -> None:
    """Publish the daemon once the gateway serves, then resubmit interrupted studies; re-sync when registry.json
    changes; stop if the SuperLink dies."""
    registry_file = consortium_dir / REGISTRY_FILE
    seen = registry_file.stat().st_mtime_ns
    published = False
    while not lifecycle.stop.wait(0.2 if not published else REGISTRY_POLL_S):
        if not published and lifecycle.server is not None and lifecycle.server.started:
            write_daemon_info(paths, info)
            logger.info("Fleet gateway on %s (TLS, Fleet API only)", info.gateway_address)
            published = True
            if resumer is not None:
                _logged(resumer.resubmit_interrupted, "resubmitting interrupted studies failed")
        if resumer is not None:
            resumer.reap()
        if superlink_poll() is not None:
            logger.error("the SuperLink exited; stopping the coordinator")
            lifecycle.superlink_died.set()
            lifecycle.request_stop()
            return
        try:
            mtime = registry_file.stat().st_mtime_ns
            if mtime != seen:
                seen = mtime
                outcome = sync_registry(consortium_dir, control)
                logger.info("registry changed: %d key(s) registered, %d unregistered", len(outcome.registered),
                            len(outcome.unregistered))
        except Exception:  # the daemon keeps serving; the next change retries
            logger.exception("registry sync failed")


def _logged(action: Callable[[], None], failure: str) -> None:
    """Run ``action``; log its exception (the daemon keeps serving) instead of ending the watcher."""
    try:
        action()
    except Exception:
        logger.exception(failure)


def _wait_until_healthy(url: str, ca_file: Path, poll: Callable[[], int | None], stop: threading.Event) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not stop.is_set():
        if poll() is not None:
            raise ConfigError("flower-superlink exited at start; see its log in the state folder's logs/")
        try:
            with urllib.request.urlopen(url + HEALTH_PATH, context=context, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ConfigError(f"flower-superlink did not answer on {url} within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
