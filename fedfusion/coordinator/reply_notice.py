"""The deployed ServerApp hears when a site has handed in a reply, so that it asks the SuperLink for replies when
there are some instead of ten times a second.

Each time the SuperLink has taken a site's ``push-messages`` (a reply announced), the coordinator's Fleet gateway
sends one datagram to every socket in the reply-notice folder (``fedfusion.deployment.coordinator.reply_broadcast``).
The folder is in the coordinator's state folder (mode 0700); the daemon puts its path in the SuperLink's environment
(`REPLY_NOTICE_DIR_ENV`), which its SuperExec and ServerApps inherit. Each ServerApp binds its own socket there,
``<pid>.sock`` (mode 0600), while it runs. A notice names no site and carries nothing: it only says "pull now". A lost
notice costs at most `FALLBACK_PULL_S` (the ServerApp pulls that often anyway); a notice that came while the
ServerApp was pulling waits in the socket and ends its next wait at once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import socket
from collections.abc import Mapping
from pathlib import Path

from fedfusion.protocol import REPLY_NOTICE_DIR_ENV

FALLBACK_PULL_S = 0.5
"""The longest a ServerApp with reply notices waits between two pulls for replies (without them: 0.1 s)."""
SOCKET_SUFFIX = ".sock"
_MAX_NOTICE_BYTES = 64


class ReplyNotices:
    """This process's reply-notice socket in ``folder`` (``<pid>.sock``), removed by `close` and at exit."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{os.getpid()}{SOCKET_SUFFIX}"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by an earlier process with this pid
        self._socket.bind(str(self.path))
        os.chmod(self.path, 0o600)  # only the coordinator's user (its gateway) may send
        self._socket.setblocking(False)
        atexit.register(self.close)

    def drain(self) -> None:
        """Forget the notices received so far (the pull that follows sees their replies)."""
        with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
            while self._socket.recv(_MAX_NOTICE_BYTES):
                pass

    def wait(self, timeout_s: float) -> bool:
        """Wait until a notice comes (at once if one came since the last `drain`) or ``timeout_s`` passed; True when
        notified."""
        if self._socket.fileno() < 0:
            return False
        readable, _, _ = select.select([self._socket], [], [], max(timeout_s, 0.0))
        return bool(readable)

    def close(self) -> None:
        """Close the socket and remove its file (again: nothing)."""
        if self._socket.fileno() >= 0:
            self._socket.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def reply_notices(environ: Mapping[str, str] | None = None) -> ReplyNotices | None:
    """This process's notices from the folder the environment names (`REPLY_NOTICE_DIR_ENV`); None when it is
    unset or the folder cannot take a socket (the ServerApp then pulls every 0.1 s, as before)."""
    folder = (os.environ if environ is None else environ).get(REPLY_NOTICE_DIR_ENV)
    if not folder:
        return None
    try:
        return ReplyNotices(Path(folder))
    except OSError:
        return None
