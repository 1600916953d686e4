"""Run the fedfusion Flower app in Flower's simulation engine (Ray backend), in this process.

This does what Flower's own ``flower-simulation`` process does for ``flwr run . <local connection>``: it
writes the app's ``pyproject.toml`` with the study config, then starts the ServerApp and the simulated
SuperNodes with Flower's engine, so every ClientApp sees the study in ``context.run_config``. It avoids the
detached local SuperLink that ``flwr run`` leaves behind (a researcher's run must not leave processes running).
``flwr.simulation.run_simulation`` is not used: it is deprecated and passes an empty run config.
It relies on ``flwr.simulation.run_simulation._run_simulation`` of the pinned Flower 1.41.0.
"""

from __future__ import annotations

import os
from pathlib import Path

import tomli_w
from flwr.app import Context, RecordDict
from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.constant import NOOP_FEDERATION_ID
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.telemetry import EventType

import fedfusion
from fedfusion.study.run_config import StudyRun

SERVER_APP = "fedfusion.coordinator.server_app:app"
CLIENT_APP = "fedfusion.site.client_app:app"


def write_flower_app(study_run: StudyRun, app_dir: Path) -> Path:
    """Write a Flower app manifest (``pyproject.toml``) carrying this study's run config; return its folder.

    The same folder works with Flower's CLI: ``flwr run <app_dir> <connection>``.
    """
    app_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "project": {"name": "fedfusion-study", "version": fedfusion.__version__,
                    "dependencies": [f"fedfusion=={fedfusion.__version__}"]},
        "tool": {"flwr": {"app": {
            "publisher": "fedfusion",
            "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
            "config": study_run.to_run_config(),
        }}},
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
    return app_dir


def run_in_simulation_engine(study_run: StudyRun, num_sites: int, app_dir: Path) -> None:
    """Run the study with ``num_sites`` simulated SuperNodes; returns when the ServerApp is done.

    Each simulated site gets one CPU (and a share of the GPU when there is one); Ray is shut down at the end.
    """
    write_flower_app(study_run, app_dir)
    run_config = study_run.to_run_config()
    run_id = generate_rand_int_from_bytes(RUN_ID_NUM_BYTES)
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    server_context = Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(),
                             run_config=dict(run_config))
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # keep CUDA_VISIBLE_DEVICES as the user set it
    cpus = os.cpu_count() or 1
    import torch  # only to see a GPU; writing the app manifest must not load torch

    gpus_per_site = 1.0 / num_sites if torch.cuda.is_available() else 0.0
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": gpus_per_site},
        "init_args": {"num_cpus": cpus, "num_gpus": 1 if gpus_per_site else 0},
    }
    _run_simulation(
        num_supernodes=num_sites,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        server_app_attr=SERVER_APP,
        client_app_attr=CLIENT_APP,
        backend_name="ray",
        backend_config=backend_config,  # type: ignore[arg-type]
        app_dir=str(app_dir),
        run=run,
        server_app_context=server_context,
        is_app=True,
    )
