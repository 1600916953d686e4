"""The site daemon's log of its link to the coordinator, from the lines Flower 1.41's SuperNode writes while it
retries (``flwr.supercore.retry.http_retry``), appended to a real log file as the SuperNode appends them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedfusion.deployment.site.connection_watch import ConnectionWatch

FAILED = "WARNING :   Connection attempt failed, retrying in 1.73 seconds\n"
BACK = "INFO :      Connection successful after 41.20 seconds and 5 tries.\n"


def test_a_lost_and_regained_coordinator_is_logged_once_each(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    log_file = tmp_path / "supernode.log"
    log_file.write_text("WARNING :   Connection attempt failed, retrying in 0.50 seconds\n")  # before this start
    watch = ConnectionWatch("site-a", "coord.example:8000", log_file)
    with caplog.at_level(logging.INFO, logger="fedfusion.site"):
        watch.poll()
        assert caplog.messages == []  # what an earlier daemon logged is not news
        with log_file.open("a") as log:
            log.write(FAILED + FAILED + "WARNING :   Connection attempt fa")  # the last line is still being written
        watch.poll()
        with log_file.open("a") as log:
            log.write("iled, retrying in 3.10 seconds\n" + BACK)
        watch.poll()
    assert caplog.messages == [
        "site site-a: the coordinator at coord.example:8000 does not answer; the SuperNode keeps retrying "
        "(backoff up to 20 s) and reconnects by itself",
        "site site-a: reconnected to the coordinator at coord.example:8000",
    ]
