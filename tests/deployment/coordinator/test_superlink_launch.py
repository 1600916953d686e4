"""The SuperLink launcher: Flower's own ``flower-superlink`` entry, run with the heap its imports left frozen."""

from __future__ import annotations

import subprocess
import sys

from fedfusion.deployment.coordinator.superlink_launch import launch_command

FREEZE_CHECK = """
import gc
from fedfusion.deployment.coordinator.superlink_launch import frozen_superlink_entry
entry = frozen_superlink_entry()
print(gc.get_freeze_count(), len(gc.get_objects()), entry.__module__)
"""
TUNING_CHECK = """
import inspect
import flwr.superlink.main as superlink_main
from flwr.supercore.corestate.sql_corestate import SqlCoreState
from fedfusion.deployment.coordinator.superlink_launch import frozen_superlink_entry
frozen_superlink_entry()
print(sum(layer.cls.__name__ == "PathScopedMiddleware" for layer in superlink_main._get_middleware()),
      inspect.unwrap(SqlCoreState._cleanup_expired_task_tokens) is not SqlCoreState._cleanup_expired_task_tokens)
"""


def test_the_launcher_runs_flowers_superlink_entry_with_the_arguments_after_the_separator() -> None:
    done = subprocess.run(launch_command(["--help"]), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: flower-superlink"), done.stdout[:200]
    assert "--enable-supernode-auth" in done.stdout  # an option only Flower's SuperLink has


def test_the_objects_its_imports_left_are_frozen_and_not_scanned_by_the_collector() -> None:
    done = subprocess.run([sys.executable, "-c", FREEZE_CHECK], capture_output=True, text=True, timeout=120,
                          check=True)
    frozen, scanned, module = done.stdout.split()
    assert module.startswith("flwr.superlink")
    assert int(frozen) > 50_000, f"only {frozen} objects frozen"
    assert int(scanned) < int(frozen) // 10  # what the collector still walks


def test_the_launched_superlink_has_its_middleware_scoped_and_its_token_cleanup_throttled() -> None:
    done = subprocess.run([sys.executable, "-c", TUNING_CHECK], capture_output=True, text=True, timeout=120,
                          check=True)
    scoped, throttled = done.stdout.split()
    assert int(scoped) == 7 and throttled == "True"
