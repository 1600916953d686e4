"""The reply notices between the coordinator's gateway and its ServerApps: real Unix datagram sockets in a folder."""

from __future__ import annotations

import socket
import stat
import tempfile
from pathlib import Path

import pytest

from fedfusion.coordinator.reply_notice import reply_notices
from fedfusion.deployment.coordinator.reply_broadcast import ReplyBroadcast, reply_notice_dir
from fedfusion.errors import ConfigError
from fedfusion.protocol import REPLY_NOTICE_DIR_ENV


def test_a_notice_wakes_every_serverapp_once_and_a_gone_serverapps_socket_is_removed() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        broadcast = ReplyBroadcast(Path(tmp) / "replies")
        assert stat.S_IMODE(broadcast.folder.stat().st_mode) == 0o700
        notices = reply_notices({REPLY_NOTICE_DIR_ENV: str(broadcast.folder)})
        assert notices is not None and stat.S_IMODE(notices.path.stat().st_mode) == 0o600
        stale = broadcast.folder / "999999.sock"  # a ServerApp that died: its socket file is left, nobody reads it
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
            dead.bind(str(stale))
        assert not notices.wait(0.05)  # nothing announced yet
        broadcast.notify()
        assert notices.wait(5.0)
        assert notices.wait(0.0)  # still there until drained
        notices.drain()
        assert not notices.wait(0.05)
        assert not stale.exists(), "the socket nobody listens on was not removed"
        notices.close()
        assert not notices.path.exists()
        broadcast.notify()  # no ServerApp: nothing to do, nothing raised
        broadcast.close()
    assert reply_notices({}) is None  # a simulation: the grid pulls every 0.1 s


def test_a_state_folder_too_long_for_a_sockets_path_is_refused_by_name() -> None:
    long_folder = Path("/tmp") / ("x" * 90)
    with pytest.raises(ConfigError, match="reply-notice sockets"):
        reply_notice_dir(long_folder)
    assert reply_notice_dir(Path("/tmp/state")).name == "reply-notices"


def test_a_notice_waits_for_the_last_object_of_the_reply_the_superlink_asked_for() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        broadcast = ReplyBroadcast(Path(tmp) / "replies")
        notices = reply_notices({REPLY_NOTICE_DIR_ENV: str(broadcast.folder)})
        assert notices is not None
        broadcast.announced("site-a-key", 2)
        broadcast.uploaded("site-b-key")  # another site's upload, no reply of its own announced: not counted
        broadcast.uploaded("site-a-key")
        assert not notices.wait(0.05)
        broadcast.uploaded("site-a-key")
        assert notices.wait(5.0)
        notices.drain()
        broadcast.uploaded("site-a-key")  # an object after its reply was whole: nothing more
        assert not notices.wait(0.05)
        for objects in (0, None):  # nothing to upload, or an answer that could not be read: notified at once
            broadcast.announced("site-a-key", objects)
            assert notices.wait(5.0)
            notices.drain()
        notices.close()
        broadcast.close()
