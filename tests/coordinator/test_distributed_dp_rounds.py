"""Distributed DP (DP-FedSGD) on Flower's Message API: the real strategy and site ClientApp over a loopback grid.

Three sites, tolerance t = 1: the study trains for a few rounds, each site's ledger holds the central entry
(sigma, q, 1 step) per round, a round that loses more than t sites releases nothing, and a site refuses to
answer a distributed-DP round in plain aggregation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flower_site import call_site, small_study
from flwr.app import ArrayRecord, Message
from flwr.serverapp.strategy import Result
from loopback_grid import LoopbackGrid
from test_secure_rounds import drop_at, node_configs

from fedfusion.coordinator.strategies.secure_fedavg import DistributedFedSGD, SecurePatientWeightedFedAvg
from fedfusion.errors import ConfigError
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.ledger import PrivacyLedger, dataset_id
from fedfusion.protocol import SITE_REFUSAL_CODE
from fedfusion.secure_aggregation.wire_records import stage_of
from fedfusion.site.client_app import app
from fedfusion.study.config import StudyConfig

DP_POLICY = "max-epsilon = inf\n"


def distributed_study(cohort: Path) -> StudyConfig:
    return small_study(cohort, dp_mode="distributed", sample_rate=0.5, distributed_dp_tolerance=1, min_sites=3,
                       noise_multiplier=0.8)


def run(study: StudyConfig, configs: dict[int, dict[str, str]], rounds: int,
        drop: Callable[[Message], bool] = lambda _: False) -> tuple[Result, LoopbackGrid]:
    grid = LoopbackGrid(app, configs, study.to_run_config(), drop=drop)
    strategy = SecurePatientWeightedFedAvg(min_sites=3, secure_aggregation=study.secure_aggregation,
                                           threshold_fraction=study.secure_aggregation_threshold,
                                           distributed=DistributedFedSGD.from_study(study))
    initial = ArrayRecord(build_model(study, seed=study.training_seed).state_dict())
    return strategy.start(grid, initial, num_rounds=rounds, timeout=60), grid


def ledger_of(config: dict[str, str]) -> PrivacyLedger:
    return PrivacyLedger(Path(config["ledger-dir"]), dataset_id(config["site-name"], Path(config["data-dir"])))


@pytest.mark.slow
def test_distributed_study_trains_and_each_ledger_holds_the_central_entry_per_round(
        small_cohort: Path, tmp_path: Path) -> None:
    study = distributed_study(small_cohort)
    configs = node_configs(small_cohort, tmp_path, "ddp", 3, DP_POLICY)
    result, _ = run(study, configs, rounds=3)
    initial = build_model(study, seed=study.training_seed).state_dict()
    assert result.arrays is not None
    moved = max(float(np.max(np.abs(result.arrays[k].numpy() - initial[k].numpy()))) for k in initial)
    assert moved > 0
    for server_round in (1, 2, 3):
        metrics = result.train_metrics_clientapp[server_round]
        assert metrics["secure-aggregation-sites"] == 3 and metrics["epsilon"] > 0
    assert result.train_metrics_clientapp[3]["epsilon"] > result.train_metrics_clientapp[1]["epsilon"]
    for config in configs.values():
        ledger = ledger_of(config)
        assert [(r.server_round, r.counted) for r in ledger.rounds()] == [(n, [(0.8, 0.5, 1)]) for n in (1, 2, 3)]
        assert ledger.history() == [(0.8, 0.5, 3)]


def test_more_than_t_dropouts_release_nothing(small_cohort: Path, tmp_path: Path) -> None:
    study = distributed_study(small_cohort)
    configs = node_configs(small_cohort, tmp_path, "ddp-drop", 3, DP_POLICY)
    result, grid = run(study, configs, rounds=1, drop=drop_at({100: "masked-input", 101: "masked-input"}))
    assert len(result.arrays) == 0 and 1 not in result.train_metrics_clientapp
    assert "unmask" not in [stage_of(m.content) for m in grid.sent]
    for config in configs.values():  # the spend stays charged
        assert ledger_of(config).history() == [(0.8, 0.5, 1)]


def test_a_site_refuses_a_distributed_round_in_plain_aggregation(small_cohort: Path, tmp_path: Path) -> None:
    study = distributed_study(small_cohort)
    configs = node_configs(small_cohort, tmp_path, "ddp-plain", 1, DP_POLICY)
    refused = call_site("train", study, configs[100])
    assert refused.has_error() and refused.error.code == SITE_REFUSAL_CODE
    assert "rule 'distributed-dp'" in refused.error.reason
    assert ledger_of(configs[100]).rounds() == []


@pytest.mark.parametrize("changes, message", [
    ({"secure_aggregation": "off"}, "needs 'dp' = true and 'secure-aggregation' on or auto"),
    ({"dp": False}, "needs 'dp' = true"),
    ({"min_sites": 2}, "'min-sites' >= 'distributed-dp-tolerance' + 2"),
    ({"sample_rate": 0.0}, "'sample-rate' must be in"),
    ({"distributed_dp_tolerance": -1}, "'distributed-dp-tolerance' must be >= 0"),
    ({"dp_mode": "central"}, "'dp-mode' must be one of"),
])
def test_study_validation(small_cohort: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        distributed_study(small_cohort).replace(**changes)
