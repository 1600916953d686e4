"""A FedAdam study's server optimizer survives a coordinator restart: the real ServerApp (``server_app.main``) and
the real site ClientApp over the loopback grid, without DP (so training is deterministic). Three rounds straight
equal two rounds, a stop, and a resumed third; resumed with the optimizer's state dropped from the checkpoint, the
third round comes out different, so the agreement shows the state was restored."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from flower_site import deployed_node_config, small_study
from flwr.app import Context, Message, RecordDict
from loopback_grid import RUN_ID, LoopbackGrid

from fedfusion.coordinator.checkpoint import CoordinatorCheckpoint
from fedfusion.coordinator.server_app import main as coordinator_main
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.protocol import CONFIG_RECORD, SERVER_ROUND_KEY
from fedfusion.site.client_app import app as site_app
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import CoordinatorSettings, StudyRun

pytestmark = pytest.mark.slow
NO_DP_POLICY = "dp-mandatory = false\nmax-epsilon = inf\nmin-eval-patients = 1\n"  # small cohorts: 2-5 held out


class CoordinatorStopped(Exception):
    """The coordinator process went away (raised instead of delivering a message)."""


def _sites(cohort: Path, work: Path, tag: str) -> dict[int, dict[str, str]]:
    policy = work / "policy.toml"
    policy.write_text(NO_DP_POLICY)
    return {100 + i: deployed_node_config(site, work / "cache", work / f"ledger-{tag}-{site.name}", policy)
            for i, site in enumerate(read_cohort_index(cohort).sites)}


def _run_coordinator(study: StudyConfig, results: Path, sites: dict[int, dict[str, str]],
                     stop_at_round: int | None = None) -> None:
    """Run the ServerApp on ``results``; with ``stop_at_round`` it stops when that round's training is sent."""
    run = StudyRun.of(study, coordinator=CoordinatorSettings(results_dir=str(results), round_timeout=120))

    def stop(message: Message) -> bool:
        config = message.content.config_records.get(CONFIG_RECORD)
        if config is not None and message.metadata.message_type == "train" and \
                config.get(SERVER_ROUND_KEY) == stop_at_round:
            raise CoordinatorStopped
        return False

    grid = LoopbackGrid(site_app, sites, run.to_run_config(), drop=stop)
    context = Context(run_id=RUN_ID, node_id=0, node_config={}, state=RecordDict(),
                      run_config=run.to_run_config())  # type: ignore[arg-type]
    coordinator_main(grid, context)


def _final(study: StudyConfig, results: Path) -> dict[str, torch.Tensor]:
    saved = CoordinatorCheckpoint(results, study, StudyRun.of(study).study_id).load()
    assert saved is not None and saved.finished and saved.server_optimizer is not None
    assert saved.server_optimizer.step == study.num_server_rounds
    return saved.weights


def _largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_server_optimizer_state_survives_a_coordinator_restart(small_cohort: Path, tmp_path: Path) -> None:
    study = small_study(small_cohort, dp=False, num_server_rounds=3, server_optimizer="fedadam",
                        server_learning_rate=0.05)
    _run_coordinator(study, tmp_path / "straight", _sites(small_cohort, tmp_path, "straight"))
    straight = _final(study, tmp_path / "straight")

    sites = _sites(small_cohort, tmp_path, "resumed")
    with pytest.raises(CoordinatorStopped):
        _run_coordinator(study, tmp_path / "resumed", sites, stop_at_round=3)
    checkpoints = CoordinatorCheckpoint(tmp_path / "resumed", study, StudyRun.of(study).study_id)
    after_two = checkpoints.load()
    assert after_two is not None and after_two.completed_round == 2
    assert after_two.server_optimizer is not None and after_two.server_optimizer.step == 2
    shutil.copytree(tmp_path / "resumed", tmp_path / "state-dropped")
    _run_coordinator(study, tmp_path / "resumed", sites)
    resumed = _final(study, tmp_path / "resumed")

    dropped = CoordinatorCheckpoint(tmp_path / "state-dropped", study, StudyRun.of(study).study_id)
    dropped.save(replace(after_two, server_optimizer=None))  # what a coordinator that did not keep it would resume
    _run_coordinator(study, tmp_path / "state-dropped", _sites(small_cohort, tmp_path, "dropped"))
    restarted = CoordinatorCheckpoint(tmp_path / "state-dropped", study, StudyRun.of(study).study_id).load()
    assert restarted is not None and restarted.finished

    agreement, without_state = _largest_difference(resumed, straight), _largest_difference(restarted.weights, straight)
    print(f"max |resumed - straight| = {agreement:.3g}; with the optimizer state dropped: {without_state:.3g}")
    assert agreement <= 1e-6
    assert without_state > 1e-3
    assert all(np.isfinite(t.numpy()).all() for t in resumed.values())
