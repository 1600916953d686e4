"""The coordinator's state folder: where its daemon and the operator's commands find each other.

    STATE_DIR/superlink.db            the SuperLink's database (nodes, runs); survives restarts
    STATE_DIR/loopback/               the loopback SuperLink's TLS files (fedfusion.deployment.coordinator.loopback_tls)
    STATE_DIR/flwr-home/config.toml   Flower CLI connection ``fedfusion-coordinator`` to the loopback SuperLink
    STATE_DIR/coordinator.json        written while the daemon runs: its pid, ports, consortium folder
    STATE_DIR/logs/                   coordinator.log, superlink.log
    STATE_DIR/studies/<id>/           one submitted study: study.json (state), app/ (the Flower app)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.errors import ConfigError, CorruptStateError

CONNECTION_NAME = "fedfusion-coordinator"
DAEMON_FILE = "coordinator.json"


@dataclass(frozen=True)
class CoordinatorPaths:
    """Paths inside one coordinator state folder."""

    state_dir: Path

    @property
    def database(self) -> Path:
        """The SuperLink's database."""
        return self.state_dir / "superlink.db"

    @property
    def loopback_dir(self) -> Path:
        """The loopback TLS files."""
        return self.state_dir / "loopback"

    @property
    def flwr_home(self) -> Path:
        """FLWR_HOME of every Flower process and CLI call of this coordinator."""
        return self.state_dir / "flwr-home"

    @property
    def logs_dir(self) -> Path:
        """Log files."""
        return self.state_dir / "logs"

    @property
    def studies_dir(self) -> Path:
        """One folder per submitted study."""
        return self.state_dir / "studies"


@dataclass(frozen=True)
class DaemonInfo:
    """What a running coordinator daemon publishes for the operator's commands."""

    pid: int
    superlink_address: str
    gateway_address: str
    consortium_dir: str
    loopback_ca_file: str


def write_daemon_info(paths: CoordinatorPaths, info: DaemonInfo) -> None:
    """Publish the running daemon's facts (atomically)."""
    atomic_write_text(paths.state_dir / DAEMON_FILE, json.dumps(asdict(info), indent=2) + "\n")


def clear_daemon_info(paths: CoordinatorPaths) -> None:
    """Remove the daemon's facts when it stops."""
    (paths.state_dir / DAEMON_FILE).unlink(missing_ok=True)


def read_daemon_info(paths: CoordinatorPaths) -> DaemonInfo:
    """The running daemon's facts; :class:`ConfigError` when no coordinator runs with this state folder
    (``CorruptStateError`` when its daemon file is malformed)."""
    path = paths.state_dir / DAEMON_FILE
    try:
        info = DaemonInfo(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ConfigError(f"no coordinator is running with state folder {paths.state_dir} ({path} is missing; "
                          "start it with `fedfusion coordinator run`)") from exc
    except (ValueError, TypeError) as exc:
        raise CorruptStateError("the coordinator's daemon file", path, repr(exc)) from exc
    if not _alive(info.pid):
        raise ConfigError(f"the coordinator of {paths.state_dir} (pid {info.pid}) is not running")
    return info


def running_daemon(paths: CoordinatorPaths) -> DaemonInfo | None:
    """The daemon running with this state folder, or None (a stale file of a dead daemon counts as none)."""
    try:
        return read_daemon_info(paths)
    except (ConfigError, CorruptStateError):
        return None


def write_cli_connection(paths: CoordinatorPaths, superlink_address: str, ca_file: Path) -> None:
    """Point Flower's CLI (``flwr run``, ``flwr ls``) at the loopback SuperLink as ``fedfusion-coordinator``."""
    text = (f'[superlink]\ndefault = "{CONNECTION_NAME}"\n\n[superlink.{CONNECTION_NAME}]\n'
            f'address = "{superlink_address}"\nroot-certificates = "{ca_file}"\n')
    atomic_write_text(paths.flwr_home / "config.toml", text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
