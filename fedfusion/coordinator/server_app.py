"""The coordinator's Flower ServerApp: patient-weighted FedAvg over the sites (through secure aggregation when the
study asks for it) moved by the study's server optimizer, with federated evaluation.

The initial model is built from the study config with the study's training seed, so every party can rebuild it; the
results folder (metrics, plot, config, final model) is written by ``RunRecorder``. After every completed round the
coordinator checkpoints into ``<results-dir>/checkpoint/`` (``coordinator/checkpoint.py``); started again on a results
folder holding a checkpoint of the same study, it resumes at the next round (or, when the study had finished,
rewrites the results folder and trains nothing); the server optimizer's state (step count, moments) is checkpointed
with the model and restored with it.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedfusion.coordinator.checkpoint import Checkpoint, CoordinatorCheckpoint
from fedfusion.coordinator.progress_log import emit_progress
from fedfusion.coordinator.prompt_grid import prompt
from fedfusion.coordinator.reply_validation import ReplyLimits
from fedfusion.coordinator.resumed_rounds import run_rounds
from fedfusion.coordinator.robust_aggregation import RobustAggregation
from fedfusion.coordinator.run_recorder import RunRecorder
from fedfusion.coordinator.server_optimizer import ServerOptimizer
from fedfusion.coordinator.strategies.secure_fedavg import DistributedFedSGD, SecurePatientWeightedFedAvg
from fedfusion.models.fusion_model import build_model
from fedfusion.study.run_config import StudyRun

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the study's rounds and write its results folder."""
    grid = prompt(grid)  # deployed: replies pulled promptly, each message's times logged; a simulation's unchanged
    run = StudyRun.from_run_config(context.run_config)
    study, settings = run.study, run.coordinator
    results_dir = Path(settings.results_dir) if settings.results_dir else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    checkpoints = CoordinatorCheckpoint(results_dir, study, run.study_id)
    saved = checkpoints.load()
    recorder = RunRecorder(study, emit=emit_progress, site_rows=saved.site_rows if saved else [],
                           round_rows=saved.round_rows if saved else [])
    if saved is not None and saved.finished:
        emit_progress(f"study {checkpoints.study_id} already finished ({saved.num_rounds} rounds); nothing to train")
        emit_progress(recorder.write(results_dir, final_weights=saved.weights).describe())
        return
    if saved is not None:
        emit_progress(f"resuming study {checkpoints.study_id} at round {saved.completed_round + 1} "
                      f"of {study.num_server_rounds}")
    latest = saved or Checkpoint(0, study.num_server_rounds, build_model(study, seed=study.training_seed).state_dict())
    server_optimizer = ServerOptimizer.of(study)
    if latest.server_optimizer is not None:
        server_optimizer.load_state_dict(latest.server_optimizer)

    def round_completed(server_round: int, arrays: ArrayRecord) -> None:
        nonlocal latest
        latest = Checkpoint(server_round, study.num_server_rounds, arrays.to_torch_state_dict(),
                            recorder.site_rows, recorder.round_rows, server_optimizer.state_dict())
        checkpoints.save(latest)

    strategy = SecurePatientWeightedFedAvg(
        min_sites=study.min_sites,
        secure_aggregation=study.secure_aggregation,
        threshold_fraction=study.secure_aggregation_threshold,
        stage_timeout=settings.round_timeout,
        distributed=DistributedFedSGD.from_study(study),
        on_site_reply=recorder.site_reply,
        on_round_aggregated=recorder.round_aggregated,
        server_optimizer=server_optimizer,
        reply_limits=ReplyLimits.of(study),
        aggregation=RobustAggregation.of(study),
    )
    run_rounds(strategy, grid, ArrayRecord(latest.weights), completed_rounds=latest.completed_round,
               num_rounds=study.num_server_rounds, timeout=settings.round_timeout, on_round_completed=round_completed)
    outcome = recorder.write(results_dir, final_weights=latest.weights)
    emit_progress(outcome.describe())
    emit_progress(f"results written to {results_dir}")
