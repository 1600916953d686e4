"""Flower's SuperLink with its start-up heap frozen: ``python -m fedfusion.deployment.coordinator.superlink_launch --
FLOWER_SUPERLINK_ARGUMENTS...`` (started by ``fedfusion coordinator run``).

Every request of a round passes through the SuperLink, one Python process, and each costs it about 13 ms of CPU
(docs/OPERATOR_GUIDE.md, "What a round costs"). Measured with ``gc.callbacks`` in the SuperLink during the deployment
benchmark's study: Python's garbage collector took 1.34 s of its 10.8 s of CPU, most of it in full collections that
walk the ~214,000 objects its imports leave behind (Flower, FastAPI, SQLAlchemy, protobuf descriptors), which live as
long as the process. This launcher imports Flower's own ``flower-superlink`` entry, collects once and freezes every
object alive by then (``gc.freeze``: the collector never scans them again), then runs the entry with the arguments
after ``--``; everything else is Flower's. Measured the same way: 0.49 s of 10.0 s (about 19,000 objects left to
scan).
"""

from __future__ import annotations

import gc
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

FLOWER_SUPERLINK_SCRIPT = "flower-superlink"


def launch_command(superlink_arguments: Sequence[str]) -> list[str]:
    """The command line that runs ``flower-superlink superlink_arguments`` through this launcher."""
    return [sys.executable, "-m", __name__, "--", *superlink_arguments]


def frozen_superlink_entry() -> Callable[[], object]:
    """Flower's ``flower-superlink`` entry, imported, with every object alive by then frozen (``gc.freeze``)."""
    (script,) = importlib.metadata.entry_points(group="console_scripts", name=FLOWER_SUPERLINK_SCRIPT)
    entry: Callable[[], object] = script.load()
    gc.collect()
    gc.freeze()
    return entry


def main(argv: Sequence[str]) -> None:
    """Freeze the imported heap, then run Flower's ``flower-superlink`` with the arguments after ``--``."""
    arguments = list(argv[1:]) if argv[:1] == ["--"] else list(argv)
    entry = frozen_superlink_entry()
    sys.argv = [FLOWER_SUPERLINK_SCRIPT, *arguments]  # Flower's entry reads its arguments from sys.argv
    raise SystemExit(entry())


if __name__ == "__main__":
    main(sys.argv[1:])
