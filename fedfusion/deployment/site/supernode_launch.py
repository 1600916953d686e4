"""Flower's SuperNode with a site's polling waits: ``python -m fedfusion.deployment.site.supernode_launch
--pull-interval SECONDS --task-wake-socket PATH -- FLOWER_SUPERNODE_ARGUMENTS...`` (started by ``fedfusion site run``).

Flower 1.41's SuperNode asks the SuperLink for a message, and after an answer with none it waits a fixed 3 s before
it asks again; while the ClientApp works on a message it checks every 0.5 s whether the reply is ready. A message
sent to an idle site therefore waits 1.5 s on average (up to 3 s) before the site even sees it, and a round waits
for the slowest site at each of its messages: five per site in a secure-aggregation round (train, three stages,
evaluate). This launcher shortens both waits (``fedfusion.flower_compat.shorten_supernode_waits``: the pull interval
to ``--pull-interval``, the local check to `LOCAL_WAIT_S`) and then runs the function of Flower's own
``flower-supernode`` console script with the arguments after ``--``: everything else is Flower's. It also shortens
the SuperNode's backoff while it pulls a message's objects that the coordinator is still uploading
(``fedfusion.flower_compat.shorten_object_pull_backoff``: Flower's first retry after 1 s cost a train message 1-3 s),
and wakes the site's SuperExec at ``--task-wake-socket`` once it holds a message's objects (``task_wake.py``); it moves
a message's three objects at once (``fedfusion.flower_compat.widen_object_transfers``).

The default pull interval, `DEFAULT_PULL_INTERVAL_S` (0.1 s), is 10 pull requests per second from each idle site to
the coordinator's gateway (Flower's own: 0.33 per second), each checked by the gateway (one signature) and answered
by the SuperLink from its database: measured, about 8 ms of the coordinator's CPU per request (gateway 2.6 ms,
SuperLink 5.1 ms), 8% of a core per idle site (0.3% at 3 s), so one core for about 12 sites. A message then waits
0.05 s on average before its site sees it, and a round's five messages about 0.4 s in all behind the slowest of three
sites (the largest of three uniform waits averages 3/4 of the interval), where Flower's 3 s cost about 11 s; measured
with the deployment benchmark, 0.1 s instead of 0.2 s cut the mean queue wait per message from 0.25 to 0.18 s.
A consortium of more than about ten sites, or a coordinator on a small machine, raises it (`MIN_PULL_INTERVAL_S` to
`MAX_PULL_INTERVAL_S`).

The coordinator's gateway now holds a pull that finds no message for up to 0.9 s and answers it as soon as the
ServerApp has pushed a message for this site (``fedfusion.deployment.coordinator.held_pulls``): an idle site asks
about once a second, not ten times, and the interval only spaces the asks between two held pulls.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

from fedfusion.deployment.site.task_wake import task_wake_sender
from fedfusion.flower_compat import (
    SUPERNODE_LOOP_MODULE,
    notify_when_message_pulled,
    shorten_object_pull_backoff,
    shorten_supernode_waits,
    widen_object_transfers,
)

DEFAULT_PULL_INTERVAL_S = 0.1
"""Seconds a site's SuperNode waits after a pull that brought no message (Flower's own: 3)."""
MIN_PULL_INTERVAL_S = 0.05
"""Below this, an idle site would ask the coordinator more than 20 times a second."""
MAX_PULL_INTERVAL_S = 3.0
"""Flower's own wait: a site never needs to ask less often than Flower does."""
LOCAL_WAIT_S = 0.01
"""Seconds between the SuperNode's checks of its own state for the reply (Flower's own: 0.5): an in-memory check,
no request leaves the site."""
FLOWER_SUPERNODE_SCRIPT = "flower-supernode"


def pull_interval(text: str) -> float:
    """``--pull-interval``: seconds, from `MIN_PULL_INTERVAL_S` to `MAX_PULL_INTERVAL_S` (argparse's type)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pull-interval must be a number of seconds, got {text!r}") from None
    if not MIN_PULL_INTERVAL_S <= seconds <= MAX_PULL_INTERVAL_S:
        raise argparse.ArgumentTypeError(f"--pull-interval must be from {MIN_PULL_INTERVAL_S} to "
                                         f"{MAX_PULL_INTERVAL_S} seconds, got {text}")
    return seconds


def launch_command(interval: float, task_wake_socket: Path, supernode_arguments: Sequence[str]) -> list[str]:
    """The command line that runs ``flower-supernode supernode_arguments`` with the pull interval ``interval``,
    waking the SuperExec at ``task_wake_socket``."""
    return [sys.executable, "-m", __name__, "--pull-interval", str(interval), "--task-wake-socket",
            str(task_wake_socket), "--", *supernode_arguments]


def main(argv: Sequence[str] | None = None) -> None:
    """Shorten the SuperNode's waits, then run Flower's ``flower-supernode`` with the remaining arguments."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {__name__}", description="Run flower-supernode with a shorter wait between its pulls.")
    parser.add_argument("--pull-interval", type=pull_interval, default=DEFAULT_PULL_INTERVAL_S,
                        help="seconds between the SuperNode's pulls while it has no message (default: %(default)s)")
    parser.add_argument("--task-wake-socket", type=Path, required=True,
                        help="the site SuperExec's wake-up socket (task_wake.py)")
    parser.add_argument("supernode_arguments", nargs=argparse.REMAINDER,
                        help="-- then flower-supernode's arguments")
    args = parser.parse_args(argv)
    arguments = args.supernode_arguments[1:] if args.supernode_arguments[:1] == ["--"] else args.supernode_arguments
    shorten_supernode_waits(args.pull_interval, LOCAL_WAIT_S)
    shorten_object_pull_backoff(SUPERNODE_LOOP_MODULE)
    notify_when_message_pulled(task_wake_sender(args.task_wake_socket))  # after: it wraps the shortened pull
    widen_object_transfers()
    (script,) = importlib.metadata.entry_points(group="console_scripts", name=FLOWER_SUPERNODE_SCRIPT)
    sys.argv = [FLOWER_SUPERNODE_SCRIPT, *arguments]  # Flower's entry reads its arguments from sys.argv
    raise SystemExit(script.load()())


if __name__ == "__main__":
    main(sys.argv[1:])
