"""Run the fedfusion Flower app in Flower's simulation engine (Ray backend), in this process.

This does what Flower's own ``flower-simulation`` process does for ``flwr run . <local connection>``: it
writes the app's ``pyproject.toml`` with the study's run config (``fedfusion.study.flower_app``), then starts the
ServerApp and the simulated SuperNodes with Flower's engine, so every ClientApp sees the study in
``context.run_config``. It avoids the detached local SuperLink that ``flwr run`` leaves behind (a researcher's run
must not leave processes running). For the same reason Ray is shut down before this returns, and the Ray processes
still running then (workers finish after their raylet) are waited for and stopped: this process adopts them as a
child subreaper (``fedfusion.deployment.process_guard``). Starting the engine in this process relies on Flower
internals, so it is done by the seam (``fedfusion.flower_compat.run_simulation_in_process``).
"""

from __future__ import annotations

import os
from pathlib import Path

from fedfusion.deployment.process_guard import no_new_descendants
from fedfusion.flower_compat import run_simulation_in_process
from fedfusion.study.flower_app import CLIENT_APP, SERVER_APP, write_flower_app
from fedfusion.study.run_config import StudyRun

RAY_EXIT_GRACE_S = 5.0
"""How long Ray's processes may take to exit after ``ray.shutdown()`` before they are stopped."""


def run_in_simulation_engine(study_run: StudyRun, num_sites: int, app_dir: Path) -> None:
    """Run the study with ``num_sites`` simulated SuperNodes; returns when the ServerApp is done.

    Each simulated site gets one CPU (and a share of the GPU when there is one); Ray is shut down at the end.
    """
    write_flower_app(study_run, app_dir)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # keep CUDA_VISIBLE_DEVICES as the user set it
    cpus = os.cpu_count() or 1
    import torch  # only to see a GPU; writing the app manifest must not load torch

    gpus_per_site = 1.0 / num_sites if torch.cuda.is_available() else 0.0
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": gpus_per_site},
        "init_args": {"num_cpus": cpus, "num_gpus": 1 if gpus_per_site else 0},
    }
    import ray

    with no_new_descendants(RAY_EXIT_GRACE_S):
        try:
            run_simulation_in_process(server_app_attr=SERVER_APP, client_app_attr=CLIENT_APP,
                                      num_supernodes=num_sites, backend_config=backend_config, app_dir=app_dir,
                                      run_config=study_run.to_run_config())
        finally:
            ray.shutdown()  # Flower's engine does too when it ends normally; a no-op then
