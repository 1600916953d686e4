"""``fedfusion site ...`` subcommands, one module each; add a module's ``register`` to ``REGISTRARS``.

Each ``register(subparsers)`` adds one subcommand and sets ``handler`` (a function of the parsed args that
returns the exit code).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fedfusion.cli.site import approve, check, egress, prepare, privacy, run

REGISTRARS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    check.register,
    prepare.register,
    privacy.register,
    egress.register,
    run.register,
    approve.register,
]
