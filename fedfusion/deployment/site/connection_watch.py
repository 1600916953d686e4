"""The site's view of its link to the coordinator, read from the SuperNode's log.

A site daemon is a service: when the coordinator is down or restarting, ``flower-supernode`` (started without
``--max-retries``/``--max-wait-time``) retries forever with Flower's exponential backoff (at most 20 s between
tries) and reconnects by itself. Flower logs every try in ``supernode.log``; this watcher turns them into one line
in the site's own log when the link is lost and one when it is back (the lines it looks for are Flower's, kept in
``fedfusion.flower_compat``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fedfusion.flower_compat import CONNECTION_BACK_LOG_TEXT, CONNECTION_LOST_LOG_TEXT

logger = logging.getLogger("fedfusion.site")

LOST = CONNECTION_LOST_LOG_TEXT
"""Flower's warning before each retry."""
BACK = CONNECTION_BACK_LOG_TEXT
"""Flower's line when a try succeeds after failed ones."""


@dataclass
class ConnectionWatch:
    """Follows ``supernode.log`` from its current end; ``poll`` logs when the coordinator is lost or back."""

    site_name: str
    superlink: str
    log_file: Path
    offset: int = 0
    lost: bool = False

    def __post_init__(self) -> None:
        self.offset = self.log_file.stat().st_size if self.log_file.is_file() else 0

    def poll(self) -> None:
        """Read what the SuperNode logged since the last poll; log a change of the link's state."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return
        complete = data.rfind(b"\n") + 1  # a line still being written is read at the next poll
        self.offset += complete
        for line in data[:complete].decode("utf-8", errors="replace").splitlines():
            if LOST in line and not self.lost:
                self.lost = True
                logger.warning("site %s: the coordinator at %s does not answer; the SuperNode keeps retrying "
                               "(backoff up to 20 s) and reconnects by itself", self.site_name, self.superlink)
            elif BACK in line and self.lost:
                self.lost = False
                logger.info("site %s: reconnected to the coordinator at %s", self.site_name, self.superlink)
