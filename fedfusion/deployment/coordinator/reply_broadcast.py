"""The gateway's end of the reply notices: once the SuperLink has taken a site's ``push-messages``, every running
ServerApp is told to pull (``fedfusion.coordinator.reply_notice``, which says why).

`ReplyBroadcast` owns the reply-notice folder in the coordinator's state folder (created mode 0700) and sends one
datagram to each socket in it, without blocking. A socket whose ServerApp is gone (the send is refused) is removed.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from fedfusion.coordinator.reply_notice import SOCKET_SUFFIX
from fedfusion.deployment.coordinator.held_pulls import MAX_SOCKET_PATH_BYTES
from fedfusion.errors import ConfigError

REPLY_NOTICE_DIR = "reply-notices"
"""In the coordinator's state folder."""
_LONGEST_SOCKET_NAME = f"{2**22}{SOCKET_SUFFIX}"  # Linux's largest pid
NOTICE = b"reply"


def reply_notice_dir(state_dir: Path) -> Path:
    """The reply-notice folder of the coordinator whose state folder is ``state_dir``; :class:`ConfigError` naming
    the folder when a ServerApp's socket in it would be longer than a Unix socket's path may be."""
    folder = state_dir.resolve() / REPLY_NOTICE_DIR
    if len(str(folder / _LONGEST_SOCKET_NAME).encode()) > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(f"--state-dir {state_dir}: the ServerApps' reply-notice sockets in {folder} would be "
                          f"longer than {MAX_SOCKET_PATH_BYTES} bytes (a Unix socket's limit); choose a shorter "
                          "state folder")
    return folder


class ReplyBroadcast:
    """Sends reply notices to the ServerApps' sockets in ``folder`` (created, mode 0700)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        self.folder = folder
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def notify(self) -> None:
        """Tell every ServerApp to pull now; remove the sockets nobody listens on."""
        for path in self.folder.glob(f"*{SOCKET_SUFFIX}"):
            try:
                self._socket.sendto(NOTICE, str(path))
            except ConnectionRefusedError:  # its ServerApp ended without removing it
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            except OSError:  # its queue is full (it has a notice to read already) or it just went
                pass

    def close(self) -> None:
        """Close the sending socket (the folder stays: ServerApps may still run)."""
        self._socket.close()
