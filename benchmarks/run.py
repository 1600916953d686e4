"""Run every benchmark module in ``benchmarks/`` (the one command: ``python benchmarks/run.py``), or only those
named on the command line (``python benchmarks/run.py data_pipeline``).

Each benchmark runs in its own child process with glibc's allocator told to keep freed memory instead of
returning it to the OS (``MALLOC_MMAP_MAX_=0``, high trim threshold and top pad): with the default
allocator, large per-step tensors are re-faulted every step, which made big training steps 2-6x slower.
The settings are printed and recorded in each result file. Benchmarks are timings, not tests: nothing is
asserted about absolute time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
MALLOC_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(64 * 2**30),
    "MALLOC_TOP_PAD_": str(2**30),
}


def benchmark_modules() -> list[Path]:
    """All benchmark scripts: every ``*.py`` here except this runner and private modules."""
    return sorted(p for p in BENCHMARKS.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))


def main(names: list[str]) -> int:
    """Run each benchmark (or those in ``names``); return non-zero if any failed or a name is unknown."""
    modules = benchmark_modules()
    unknown = sorted(set(names) - {m.stem for m in modules})
    if unknown:
        print(f"unknown benchmarks {unknown}; known: {[m.stem for m in modules]}")
        return 2
    env = {**os.environ, **MALLOC_ENV}
    print("benchmark child processes get: " + " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()))
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
