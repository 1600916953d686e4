"""``fedfusion site run``: one hospital's SuperNode, outbound only, running only the apps its admin approved.

Two processes in the foreground until SIGTERM/SIGINT:
1. ``flower-supernode`` dialing the coordinator with TLS (the bundle's ``ca.crt``) and the site's key, with the
   site's node config (data, cache, ledger, policy, device), ``--isolation process`` and its Runtime
   API on 127.0.0.1 only; it opens no port to the network;
2. the site's SuperExec (``fedfusion.deployment.site.site_exec``), which hands each ClientApp task to its run's worker;
   it proves itself to the SuperNode with Flower's SuperExec HMAC (a secret made fresh at every start), so no
   other local process can take the site's tasks; the SuperNode wakes it when a message has arrived
   (``task_wake.py``: a Unix socket in the state folder).
If either exits, the other is stopped; the exit code is the SuperNode's (1 for every Flower error; Flower's own code,
e.g. 305 when the site's key is not registered at the coordinator, is in supernode.log), or 0 after SIGTERM.
A coordinator that is down or restarting is not an exit: the SuperNode retries forever (``connection_watch.py``
logs when the link is lost and back).

Both run under ``fedfusion.deployment.supervisor``, so they and the ClientApps they started stop when the daemon
dies, SIGKILL included; ``processes.json`` in the state folder (``pid_file.py``) lets the next start stop anything
a killed daemon left and tell the coordinator that the old SuperNode is offline (else it refuses the same key for up
to a minute: Flower's 305).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import signal
import sys
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from fedfusion.deployment.pid_file import clear_processes, record_processes, stop_predecessor
from fedfusion.deployment.processes import check_port_free, flower_env, start_process, stop_process, thread_limits
from fedfusion.deployment.site.app_approval import APPROVED_APPS_FILE, load_approvals
from fedfusion.deployment.site.connection_watch import ConnectionWatch
from fedfusion.deployment.site.supernode_launch import DEFAULT_PULL_INTERVAL_S, launch_command
from fedfusion.deployment.site.task_wake import task_wake_path
from fedfusion.errors import ConfigError
from fedfusion.flower_compat import SUPERNODE_ID_LOG_TEXT, deactivate_supernode
from fedfusion.provisioning.key_files import write_private
from fedfusion.provisioning.site_bundle import SITE_TOML_FILE

logger = logging.getLogger("fedfusion.site")

DEFAULT_RUNTIME_PORT = 9094
SUPEREXEC_SECRET_FILE = "superexec.secret"
"""Shared by the SuperNode and the site's SuperExec: only the latter can take ClientApp tasks (Flower's HMAC)."""
SUPERVISE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class SiteBundle:
    """A site's connection settings from its bundle's ``site.toml`` (paths resolved against the bundle)."""

    site_name: str
    superlink: str
    root_certificates: Path
    private_key: Path


def read_bundle(bundle_dir: Path) -> SiteBundle:
    """Read ``site.toml``; :class:`ConfigError` naming the file when it or a file it names is missing."""
    path = bundle_dir / SITE_TOML_FILE
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
        bundle = SiteBundle(site_name=str(values["site-name"]), superlink=str(values["superlink"]),
                            root_certificates=bundle_dir / str(values["root-certificates"]),
                            private_key=bundle_dir / str(values["auth-supernode-private-key"]))
    except FileNotFoundError as exc:
        raise ConfigError(f"{bundle_dir} is not a site bundle: {path} is missing") from exc
    except (KeyError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is malformed: {exc!r}") from exc
    for file in (bundle.root_certificates, bundle.private_key):
        if not file.is_file():
            raise ConfigError(f"site {bundle.site_name}: {file} (named in {path}) is missing")
    return bundle


@dataclass(frozen=True)
class SiteOptions:
    """What the site admin sets: the bundle, the state folder and the node config the ClientApp reads."""

    bundle_dir: Path
    state_dir: Path
    node_config: dict[str, str]
    """Node config keys of ``fedfusion.site.node_context`` and ``site_privacy`` (``site-name`` is added)."""
    runtime_port: int = DEFAULT_RUNTIME_PORT
    superlink: str | None = None
    """Override of the bundle's coordinator address."""
    pull_interval: float = DEFAULT_PULL_INTERVAL_S
    """Seconds the SuperNode waits after a pull that brought no message (``supernode_launch``; Flower's own: 3)."""
    threads: int | None = None
    """Compute threads of the site's worker (torch, OpenMP, BLAS); None: one per core. Several site daemons sharing
    one host (a test bed) each take a share, as Flower's simulation gives each site one CPU."""

    @property
    def approved_apps(self) -> Path:
        """The site's app allow-list."""
        return self.state_dir / APPROVED_APPS_FILE


def node_config_arg(node_config: dict[str, str]) -> str:
    """Flower's ``--node-config`` string: ``key="value"`` pairs, values quoted as TOML strings."""
    return " ".join(f"{key}={json.dumps(str(value))}" for key, value in sorted(node_config.items()))


def run_site(options: SiteOptions) -> int:
    """Run the site's SuperNode and SuperExec until stopped; return the process exit code."""
    bundle = read_bundle(options.bundle_dir)
    approvals = load_approvals(options.approved_apps)  # a malformed allow-list fails here, not per message
    if not approvals.hashes and not approvals.fedfusion_versions:
        logger.warning("site %s approves no app yet (%s): every app will be refused; approve one with "
                       "`fedfusion site approve HASH`", bundle.site_name, options.approved_apps)
    node_config = {**options.node_config, "site-name": bundle.site_name}
    superlink = options.superlink or bundle.superlink
    logs = options.state_dir / "logs"
    task_wake_socket = task_wake_path(options.state_dir)  # a state folder too deep for it fails before anything runs
    if stop_predecessor(options.state_dir, f"site daemon of {bundle.site_name}") is not None:
        _mark_offline(bundle, superlink, logs / "supernode.log")
    check_port_free("127.0.0.1", options.runtime_port, "--runtime-port")
    secret_file = options.state_dir / SUPEREXEC_SECRET_FILE
    write_private(secret_file, secrets.token_bytes(32))  # fresh at every start; read by the two children only
    env = flower_env(options.state_dir / "flwr-home")
    worker_env = {**env, **thread_limits(options.threads)}  # checked before anything starts
    runtime_address = f"127.0.0.1:{options.runtime_port}"
    supernode = start_process(launch_command(options.pull_interval, task_wake_socket, [
        "--superlink", superlink, "--root-certificates", str(bundle.root_certificates), "--auth-supernode-private-key",
        str(bundle.private_key), "--node-config", node_config_arg(node_config), "--isolation", "process",
        "--superexec-auth-secret-file", str(secret_file), "--host", "127.0.0.1", "--port", str(options.runtime_port)]),
        logs / "supernode.log", env)
    site_exec = start_process(
        [sys.executable, "-m", "fedfusion.deployment.site.site_exec", "--runtime-api-address", runtime_address,
         "--approved-apps", str(options.approved_apps), "--site-name", bundle.site_name,
         "--superexec-auth-secret-file", str(secret_file), "--task-wake-socket", str(task_wake_socket),
         "--parent-pid", str(supernode.pid)],
        logs / "site-exec.log", worker_env)
    record_processes(options.state_dir, {"supernode": supernode.pid, "site-exec": site_exec.pid})
    logger.info("site %s: SuperNode (pid %d) dialing %s; SuperExec (pid %d); logs in %s", bundle.site_name,
                supernode.pid, superlink, site_exec.pid, logs)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        del frame
        logger.info("site %s: signal %d, stopping", bundle.site_name, signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    connection = ConnectionWatch(bundle.site_name, superlink, logs / "supernode.log")
    try:
        while not stopping.wait(SUPERVISE_INTERVAL_S):
            connection.poll()
            if supernode.poll() is not None or site_exec.poll() is not None:
                break
    finally:
        supernode_code = supernode.poll()
        stop_process(site_exec)
        stop_process(supernode)
        clear_processes(options.state_dir)
    if stopping.is_set():
        return 0
    code = supernode_code or 1  # a daemon that ends on its own failed, even when Flower says 0
    logger.error("site %s: %s exited (code %s): is the site's key registered (not revoked) at the coordinator, "
                 "and the coordinator reachable? See %s", bundle.site_name,
                 "the SuperNode" if supernode_code is not None else "the SuperExec", supernode_code, logs)
    return code


def _mark_offline(bundle: SiteBundle, superlink: str, supernode_log: Path) -> None:
    """Tell the coordinator that the SuperNode of a killed predecessor is offline (the last node id it logged), so
    that the new SuperNode can activate now rather than after the old one's heartbeat runs out."""
    try:
        ids = re.findall(re.escape(SUPERNODE_ID_LOG_TEXT) + r"(\d+)", supernode_log.read_text(errors="replace"))
    except FileNotFoundError:
        ids = []
    if not ids:
        return
    try:
        deactivate_supernode(superlink, bundle.root_certificates, bundle.private_key, int(ids[-1]))
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == httpx.codes.PRECONDITION_FAILED:  # its SuperNode had time to say goodbye
            logger.info("site %s: node %s of the previous daemon is already offline", bundle.site_name, ids[-1])
        else:  # 401: the key changed since (rotated)
            logger.info("site %s: node %s of the previous daemon not marked offline (HTTP %d)", bundle.site_name,
                        ids[-1], exc.response.status_code)
        return
    except (httpx.HTTPError, ValueError) as exc:  # the coordinator is down: the SuperNode will retry anyway
        logger.info("site %s: node %s of the previous daemon not marked offline (%s)", bundle.site_name, ids[-1], exc)
        return
    logger.info("site %s: node %s of the previous daemon marked offline at the coordinator", bundle.site_name, ids[-1])
