"""Run every benchmark module in ``benchmarks/`` (the one command: ``python benchmarks/run.py``), or only those
named on the command line (``python benchmarks/run.py data_pipeline``).

Each benchmark runs in its own child process with the glibc allocator settings the product runs with: the
``MALLOC_*`` lines of ``deploy/fedfusion.env`` (the environment file of every fedfusion service, also exported by
``scripts/simulate``). Freed memory is kept instead of returned to the OS; with the
default allocator, large per-step tensors are re-faulted every step, which made big training steps 2-6x slower.
Nothing else is tuned: torch thread counts are the product's own (its defaults; one thread per slide worker in
the data path). The settings are printed and recorded in each result file. Benchmarks are timings, not tests: nothing is
asserted about absolute time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
PRODUCT_ENV_FILE = BENCHMARKS.parent / "deploy" / "fedfusion.env"
NOT_BENCHMARKS = frozenset({"message_timeline", "process_cpu", "distributed_dp_sweep"})
"""Modules here that are not benchmarks: a benchmark's helpers (the deployment timeline and CPU) and a tuning tool (the
in-process distributed-DP sweep, which needs a cohort folder: docs/DP_RECIPE.md)."""


def product_malloc_env() -> dict[str, str]:
    """The ``MALLOC_*`` settings of ``deploy/fedfusion.env``, which every fedfusion service runs with."""
    lines = PRODUCT_ENV_FILE.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.startswith("MALLOC_"))


def benchmark_modules() -> list[Path]:
    """All benchmark scripts: every ``*.py`` here except this runner, private modules and ``NOT_BENCHMARKS``."""
    return sorted(p for p in BENCHMARKS.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
                  and p.stem not in NOT_BENCHMARKS)


def main(names: list[str]) -> int:
    """Run each benchmark (or those in ``names``); return non-zero if any failed or a name is unknown."""
    modules = benchmark_modules()
    unknown = sorted(set(names) - {m.stem for m in modules})
    if unknown:
        print(f"unknown benchmarks {unknown}; known: {[m.stem for m in modules]}")
        return 2
    malloc = product_malloc_env()
    env = {**os.environ, **malloc}
    print(f"benchmark child processes get the product's ({PRODUCT_ENV_FILE.name}): "
          + " ".join(f"{k}={v}" for k, v in malloc.items()))
    failed = []
    for module in (m for m in modules if not names or m.stem in names):
        print(f"== {module.stem}", flush=True)
        if subprocess.run([sys.executable, str(module)], env=env, check=False).returncode != 0:
            failed.append(module.stem)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
