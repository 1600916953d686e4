"""The coordinator's Flower ServerApp: patient-weighted FedAvg over the sites (through secure aggregation when the
study asks for it), with federated evaluation.

The initial model is built from the study config with the study seed, so every party can rebuild it; the
results folder (metrics, plot, config, final model) is written by ``RunRecorder``.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedfusion.config import StudyConfig
from fedfusion.models.fusion_model import build_model
from fedfusion.server.progress_log import emit_progress
from fedfusion.server.run_recorder import RunRecorder
from fedfusion.strategies.secure_fedavg import SecurePatientWeightedFedAvg

ROUND_TIMEOUT_S = 3600.0

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the study's rounds and write its results folder."""
    study = StudyConfig.from_run_config(context.run_config)
    results_dir = Path(study.results_dir) if study.results_dir else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    recorder = RunRecorder(study, emit=emit_progress)
    strategy = SecurePatientWeightedFedAvg(
        min_sites=study.min_sites,
        secure_aggregation=study.secure_aggregation,
        threshold_fraction=study.secure_aggregation_threshold,
        on_site_reply=recorder.site_reply,
        on_round_aggregated=recorder.round_aggregated,
    )
    model = build_model(study, seed=study.seed)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=study.num_server_rounds,
        timeout=ROUND_TIMEOUT_S,
    )
    final = result.arrays.to_torch_state_dict() if result.arrays is not None else None
    recorder.write(results_dir, final_weights=final)
    emit_progress(f"results written to {results_dir}")
