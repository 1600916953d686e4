"""``fedfusion site run``: one hospital's SuperNode, outbound only, running only the apps its admin approved.

Two processes in the foreground until SIGTERM/SIGINT:
1. ``flower-supernode`` dialing the coordinator with TLS (the bundle's ``ca.crt``) and the site's key, with the
   site's node config (data, cache, ledger, policy, device), ``--isolation process`` and its Runtime
   API on 127.0.0.1 only; it opens no port to the network;
2. the site's SuperExec (``fedfusion.deployment.site.site_exec``), which starts each ClientApp through the app gate;
   it proves itself to the SuperNode with Flower's SuperExec HMAC (a secret made fresh at every start), so no
   other local process can take the site's tasks.
If either exits, the other is stopped; the exit code is the SuperNode's (1 for every Flower error; Flower's own code,
e.g. 305 when the site's key is not registered at the coordinator, is in supernode.log), or 0 after SIGTERM.
A coordinator that is down or restarting is not an exit: the SuperNode retries forever (``connection_watch.py``
logs when the link is lost and back).
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import sys
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from fedfusion.deployment.processes import flower_env, flower_script, start_process, stop_process
from fedfusion.deployment.site.app_approval import APPROVED_APPS_FILE, load_approvals
from fedfusion.deployment.site.connection_watch import ConnectionWatch
from fedfusion.errors import ConfigError
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
    secret_file = options.state_dir / SUPEREXEC_SECRET_FILE
    write_private(secret_file, secrets.token_bytes(32))  # fresh at every start; read by the two children only
    env = flower_env(options.state_dir / "flwr-home")
    logs = options.state_dir / "logs"
    runtime_address = f"127.0.0.1:{options.runtime_port}"
    supernode = start_process(
        [flower_script("flower-supernode"), "--superlink", options.superlink or bundle.superlink,
         "--root-certificates", str(bundle.root_certificates), "--auth-supernode-private-key",
         str(bundle.private_key), "--node-config", node_config_arg(node_config), "--isolation", "process",
         "--superexec-auth-secret-file", str(secret_file), "--host", "127.0.0.1", "--port", str(options.runtime_port)],
        logs / "supernode.log", env)
    site_exec = start_process(
        [sys.executable, "-m", "fedfusion.deployment.site.site_exec", "--runtime-api-address", runtime_address,
         "--approved-apps", str(options.approved_apps), "--site-name", bundle.site_name,
         "--superexec-auth-secret-file", str(secret_file), "--parent-pid", str(supernode.pid)],
        logs / "site-exec.log", env)
    logger.info("site %s: SuperNode (pid %d) dialing %s; SuperExec (pid %d); logs in %s", bundle.site_name,
                supernode.pid, options.superlink or bundle.superlink, site_exec.pid, logs)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        del frame
        logger.info("site %s: signal %d, stopping", bundle.site_name, signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    connection = ConnectionWatch(bundle.site_name, options.superlink or bundle.superlink, logs / "supernode.log")
    try:
        while not stopping.wait(SUPERVISE_INTERVAL_S):
            connection.poll()
            if supernode.poll() is not None or site_exec.poll() is not None:
                break
    finally:
        supernode_code = supernode.poll()
        stop_process(site_exec)
        stop_process(supernode)
    if stopping.is_set():
        return 0
    code = supernode_code or 1  # a daemon that ends on its own failed, even when Flower says 0
    logger.error("site %s: %s exited (code %s): is the site's key registered (not revoked) at the coordinator, "
                 "and the coordinator reachable? See %s", bundle.site_name,
                 "the SuperNode" if supernode_code is not None else "the SuperExec", supernode_code, logs)
    return code
