"""Start and stop the Flower daemons a fedfusion daemon supervises, with Flower's environment set right.

Each child runs under ``fedfusion.deployment.supervisor``, in its own process group: the supervisor stops the
child and everything the child started (a SuperLink starts a SuperExec, a SuperExec starts app processes) when the
child exits, when asked to, and when the daemon dies, SIGKILL included. Stopping escalates to SIGKILL on the
process groups of the supervisor and of its descendants; nothing is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from fedfusion.errors import ConfigError

STOP_TIMEOUT_S = 20.0

FLOWER_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
"""Set for every Flower process fedfusion starts: no telemetry, no update check, no ``uv sync`` of an app."""


def flower_env(flwr_home: Path) -> dict[str, str]:
    """This process's environment plus Flower's settings, ``FLWR_HOME`` and this interpreter's scripts on PATH.

    The SuperLink starts ``flower-superexec`` by name, so the scripts folder must be on PATH even when the
    virtual environment is not activated (systemd units run ``.venv/bin/fedfusion`` directly).
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {**os.environ, **FLOWER_ENVIRONMENT, "FLWR_HOME": str(flwr_home),
            "PATH": path if path.split(os.pathsep)[0] == bin_dir else f"{bin_dir}{os.pathsep}{path}"}


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""What torch (intra-op), OpenMP and the BLAS libraries read at start for their compute-thread count."""


def thread_limits(threads: int | None) -> dict[str, str]:
    """The environment that caps a process's compute threads at ``threads`` (empty for None: the libraries' own
    default, one per core); ``ConfigError`` below 1."""
    if threads is None:
        return {}
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    return dict.fromkeys(THREAD_VARIABLES, str(threads))


def flower_script(name: str) -> str:
    """The path of a Flower console script installed beside this interpreter."""
    return str(Path(sys.executable).parent / name)


def start_process(command: Sequence[str], log_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` under a supervisor (``fedfusion.deployment.supervisor``) in a new process group, appending
    its output to ``log_file``; the returned process is the supervisor, whose exit code is the command's.

    The supervisor gets SIGTERM when the thread calling this ends (the kernel's parent-death signal): call it from
    the daemon's main thread, or from a thread that lives as long as the process should.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    supervised = [sys.executable, "-m", "fedfusion.deployment.supervisor", "--parent-pid", str(os.getpid()), "--",
                  *command]
    with log_file.open("ab") as out:
        return subprocess.Popen(supervised, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def check_port_free(host: str, port: int, option: str) -> None:
    """:class:`ConfigError` naming the port and ``option`` (the setting that chose it) when ``host:port`` cannot be
    listened on, e.g. because another process serves there."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {host}:{port} is in use by another process (set by {option}); stop that "
                                  f"process or choose another port") from exc
            raise ConfigError(f"cannot listen on {host}:{port} (set by {option}): {exc.strerror}") from exc


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM ``process`` (a supervisor from :func:`start_process`: it stops its command and all the command
    started); SIGKILL the process groups of ``process`` and of its descendants after ``timeout`` seconds; return the
    exit code.

    The descendants' groups count because Flower starts some children in sessions of their own (the SuperLink's
    SuperExec and, under it, a running ServerApp), which would outlive the supervisor's group.
    """
    groups = {process.pid} | _groups_of(descendants(process.pid))
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_groups(groups, signal.SIGKILL)
            process.wait()
    _signal_groups(groups, signal.SIGKILL)  # children the leader left behind (a group outlives its leader)
    return int(process.returncode)


def descendants(pid: int) -> list[int]:
    """The processes descended from ``pid`` now (from /proc's parent links; empty where there is no /proc)."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found: list[int] = []
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found.extend(sorted(frontier))
    return found


def _groups_of(pids: list[int]) -> set[int]:
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    return groups - {os.getpgid(0)}


def _signal_groups(pgids: set[int], sig: signal.Signals) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
