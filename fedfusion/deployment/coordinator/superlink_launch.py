"""Flower's SuperLink, tuned for its per-request cost: ``python -m fedfusion.deployment.coordinator.superlink_launch --
FLOWER_SUPERLINK_ARGUMENTS...`` (started by ``fedfusion coordinator run``).

Every request of a round passes through the SuperLink, one Python process (docs/OPERATOR_GUIDE.md, "What a round
costs"). This launcher imports Flower's own ``flower-superlink`` entry, makes three changes to the process it runs
in, then runs the entry with the arguments after ``--``; everything else is Flower's:

- Flower's middleware layers each run only for the API they act on (``superlink_middleware``): a Fleet request
  passes four of the nine, a Runtime request three.
- The SQL state looks for expired task claims at most once a second instead of several times per request
  (``flower_compat.throttle_task_token_cleanup``).
- Everything its imports left alive is collected once and frozen (``gc.freeze``): measured with ``gc.callbacks`` in
  the benchmark's study, Python's collector took 1.34 s of the SuperLink's 10.8 s of CPU walking the ~214,000
  objects of Flower, FastAPI, SQLAlchemy and protobuf that live as long as the process; 0.49 s of 10.0 s frozen.
"""

from __future__ import annotations

import gc
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

from fedfusion import flower_compat
from fedfusion.deployment.coordinator import superlink_middleware

FLOWER_SUPERLINK_SCRIPT = "flower-superlink"


def launch_command(superlink_arguments: Sequence[str]) -> list[str]:
    """The command line that runs ``flower-superlink superlink_arguments`` through this launcher."""
    return [sys.executable, "-m", __name__, "--", *superlink_arguments]


def frozen_superlink_entry() -> Callable[[], object]:
    """Flower's ``flower-superlink`` entry, imported, with its middleware scoped to their APIs, its task-token
    cleanup throttled and every object alive by then frozen (``gc.freeze``)."""
    (script,) = importlib.metadata.entry_points(group="console_scripts", name=FLOWER_SUPERLINK_SCRIPT)
    entry: Callable[[], object] = script.load()
    superlink_middleware.install()
    flower_compat.throttle_task_token_cleanup()
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
