"""Processes a daemon starts never outlive it: the supervisor (kill -9 of the daemon included), the pid file a
restart reads to stop what a killed predecessor left, and a port in use named as such. Real processes (``sleep``
under ``sh``, some in sessions of their own, one orphaned on purpose); Linux /proc."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from process_scan import processes_with_marker

from fedfusion.deployment.pid_file import PID_FILE, read_processes, record_processes, stop_predecessor
from fedfusion.deployment.process_guard import ProcessIdentity, start_time
from fedfusion.deployment.processes import check_port_free, descendants, start_process, stop_process
from fedfusion.errors import ConfigError

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
TREE = "sleep 300 & setsid sleep 301 & (sleep 302 &); exec sleep 303"
"""A child, a child in a session of its own, an orphan (its parent exits at once), and the command itself."""


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(start_time(pid) is not None for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _marked_env() -> tuple[str, dict[str, str]]:
    marker = uuid.uuid4().hex
    return marker, {**os.environ, "FEDFUSION_TEST_MARKER": marker}


def _wait_for_tree(marker: str, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while len(pids := processes_with_marker(marker)) < count:
        assert time.monotonic() < deadline, f"only {pids} started"
        time.sleep(0.1)
    return pids


def test_sigkill_of_the_daemon_takes_its_whole_tree_down(tmp_path: Path) -> None:
    marker, env = _marked_env()
    daemon_code = ("import sys, time; from pathlib import Path; from fedfusion.deployment.processes import "
                   f"start_process; start_process(['sh', '-c', {TREE!r}], Path(sys.argv[1]), dict(__import__('os')"
                   ".environ)); time.sleep(300)")
    daemon = subprocess.Popen([sys.executable, "-c", daemon_code, str(tmp_path / "child.log")], env=env)
    tree = _wait_for_tree(marker, 6)  # the daemon, the supervisor, the four sleeps
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    assert _gone_within(tree, 10), [p for p in tree if start_time(p) is not None]


def test_the_supervisor_returns_the_commands_exit_code_and_stops_what_it_left(tmp_path: Path) -> None:
    marker, env = _marked_env()
    process = start_process(["sh", "-c", "setsid sleep 300 & sleep 1; exit 7"], tmp_path / "child.log", env)
    left = _wait_for_tree(marker, 3)
    assert process.wait(timeout=30) == 7
    assert _gone_within(left, 5)


def test_stop_process_stops_the_tree_and_reports_the_signal(tmp_path: Path) -> None:
    marker, env = _marked_env()
    process = start_process(["sh", "-c", TREE], tmp_path / "child.log", env)
    tree = _wait_for_tree(marker, 5)
    assert stop_process(process, timeout=20) == 128 + signal.SIGTERM
    assert _gone_within(tree, 1)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", "sleep 300 & exec sleep 301"], start_new_session=True)


def test_a_restart_stops_what_a_killed_predecessor_left(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = _sleeper()
    reused = _sleeper()  # alive, but with a start time that is not the recorded one: another process
    time.sleep(0.3)
    tree = [left.pid, *descendants(left.pid)]
    assert len(tree) == 2
    record = {"daemon": {"pid": dead.pid, "started": 1},
              "supernode": {"pid": left.pid, "started": start_time(left.pid)},
              "site-exec": {"pid": reused.pid, "started": 1}}
    (tmp_path / PID_FILE).write_text(json.dumps(record))
    previous = stop_predecessor(tmp_path, "site daemon of site-a")
    assert previous is not None and previous.daemon.pid == dead.pid
    assert _gone_within(tree, 1)
    assert reused.poll() is None  # a PID now naming another process is never signalled
    assert not (tmp_path / PID_FILE).exists()
    assert stop_predecessor(tmp_path, "site daemon of site-a") is None  # a clean start: nothing to do
    stop_process(reused, timeout=5)


def test_a_daemon_still_running_on_the_state_folder_is_not_touched(tmp_path: Path) -> None:
    other = _sleeper()
    try:
        time.sleep(0.2)
        (tmp_path / PID_FILE).write_text(json.dumps({"daemon": {"pid": other.pid,
                                                                 "started": start_time(other.pid)}}))
        with pytest.raises(ConfigError, match=rf"a coordinator \(pid {other.pid}\) already runs with state folder"):
            stop_predecessor(tmp_path, "coordinator")
        assert other.poll() is None and (tmp_path / PID_FILE).exists()
    finally:
        stop_process(other, timeout=5)


def test_the_pid_file_names_the_daemon_and_its_children_by_pid_and_start_time(tmp_path: Path) -> None:
    child = _sleeper()
    try:
        record_processes(tmp_path, {"superlink": child.pid})
        recorded = read_processes(tmp_path)
        assert recorded is not None
        assert recorded.daemon == ProcessIdentity.of(os.getpid())
        assert recorded.children == {"superlink": ProcessIdentity.of(child.pid)}
    finally:
        stop_process(child, timeout=5)


def test_a_port_in_use_is_named_with_its_option() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"port 127\.0\.0\.1:{port} is in use by another process "
                                              r"\(set by --runtime-port\)"):
            check_port_free("127.0.0.1", port, "--runtime-port")
    check_port_free("127.0.0.1", port, "--runtime-port")  # free again once the other process closed it
