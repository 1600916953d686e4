"""The gateway's end of the reply notices: once a site's reply is at the SuperLink whole (its ``push-messages`` taken
and the objects the SuperLink asked for uploaded), every running ServerApp is told to pull
(``fedfusion.coordinator.reply_notice``, which says why).

`ReplyBroadcast` owns the reply-notice folder in the coordinator's state folder (created mode 0700) and sends one
datagram to each socket in it, without blocking. A socket whose ServerApp is gone (the send is refused) is removed.
The gateway tells it of each reply a site announced (`announced`, with the number of objects the SuperLink asked for)
and of each object it uploaded (`uploaded`): the notice goes out after the last one, so that the ServerApp's pull finds
the reply whole instead of retrying its objects (measured: 171 object pulls for 117 objects when the notice went out
at the announcement). A SuperNode hands in one reply at a time. A count that goes wrong (an upload refused) only
delays that reply's pull to the ServerApp's fallback pull.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from fedfusion.coordinator.reply_notice import SOCKET_SUFFIX
from fedfusion.deployment.unix_socket import state_socket_path

REPLY_NOTICE_DIR = "reply-notices"
"""In the coordinator's state folder."""
_LONGEST_SOCKET_NAME = f"{2**22}{SOCKET_SUFFIX}"  # Linux's largest pid
NOTICE = b"reply"


def reply_notice_dir(state_dir: Path) -> Path:
    """The reply-notice folder of the coordinator whose state folder is ``state_dir``; :class:`ConfigError` naming
    the folder when a ServerApp's socket in it would be longer than a Unix socket's path may be."""
    longest = state_socket_path(state_dir, f"{REPLY_NOTICE_DIR}/{_LONGEST_SOCKET_NAME}",
                                "the longest of the ServerApps' reply-notice sockets")
    return longest.parent


class ReplyBroadcast:
    """Sends reply notices to the ServerApps' sockets in ``folder`` (created, mode 0700)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        self.folder = folder
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._uploads: dict[str, int] = {}
        """Objects still to upload, per sender (the public key that signed the reply)."""

    def announced(self, sender: str, objects: int | None) -> None:
        """``sender`` announced a reply and the SuperLink asked for ``objects`` of it (None: unknown); notify now when
        there are none to wait for, else after the last upload."""
        if objects:
            self._uploads[sender] = objects
        else:
            self._uploads.pop(sender, None)
            self.notify()

    def uploaded(self, sender: str) -> None:
        """``sender`` uploaded one object; notify when it was the last its reply needed."""
        left = self._uploads.get(sender)
        if left is None:
            return
        if left > 1:
            self._uploads[sender] = left - 1
        else:
            del self._uploads[sender]
            self.notify()

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
