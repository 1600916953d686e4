"""The SuperNode's wake-up of the site's SuperExec: a datagram on a Unix socket in the state folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedfusion.deployment.site.task_wake import (
    TASK_WAKE_SOCKET_FILE,
    TaskWakeListener,
    task_wake_path,
    task_wake_sender,
)
from fedfusion.deployment.unix_socket import MAX_SOCKET_PATH_BYTES
from fedfusion.errors import ConfigError


def test_a_wake_up_ends_the_wait_and_every_queued_one_is_consumed(tmp_path: Path) -> None:
    path = task_wake_path(tmp_path)
    assert path == tmp_path.resolve() / TASK_WAKE_SOCKET_FILE
    (path).write_text("a killed predecessor's socket file")
    listener = TaskWakeListener(path)  # replaces the stale file
    wake = task_wake_sender(path)
    try:
        started = time.monotonic()
        assert not listener.wait(0.05)  # nothing sent: the timeout
        assert time.monotonic() - started >= 0.04
        wake()
        wake()
        started = time.monotonic()
        assert listener.wait(30)
        assert time.monotonic() - started < 5  # woken, not timed out
        assert not listener.wait(0.01)  # both wake-ups were read by the first wait
    finally:
        listener.close()
    assert not path.exists()
    wake()  # no listener: nothing raised, nothing blocks


def test_a_state_folder_too_deep_for_a_unix_socket_is_refused_naming_it(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * MAX_SOCKET_PATH_BYTES)
    with pytest.raises(ConfigError, match=r"--state-dir .*longer than 107 bytes"):
        task_wake_path(deep)
