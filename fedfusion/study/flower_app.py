"""A study as a Flower app: the manifest (``pyproject.toml``) naming fedfusion's ServerApp and ClientApp and
carrying the study's run config. Code-free: the sites run their own installed fedfusion.

``fedfusion simulate`` writes one into its results folder and ``fedfusion study prepare`` into the study's folder,
where its FAB hash is what the sites approve. The same folder works with Flower's CLI:
``flwr run <app_dir> <connection>``.
"""

from __future__ import annotations

from pathlib import Path

import tomli_w

import fedfusion
from fedfusion.study.run_config import StudyRun

SERVER_APP = "fedfusion.coordinator.server_app:app"
CLIENT_APP = "fedfusion.site.client_app:app"


def write_flower_app(study_run: StudyRun, app_dir: Path) -> Path:
    """Write the Flower app manifest of ``study_run`` into ``app_dir``; return the folder."""
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
