"""Budget-derived noise never exceeds the target: a whole study of the real strategy and the real site ClientApp
(loopback grid, Flower's wire format), then each site's ledger replayed."""

from __future__ import annotations

from pathlib import Path

import pytest
from flower_site import deployed_node_config, small_study
from flwr.app import ArrayRecord, Message
from loopback_grid import LoopbackGrid

from fedfusion.cli import main
from fedfusion.coordinator.strategies.secure_fedavg import SecurePatientWeightedFedAvg
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.flower_compat import message_from_bytes
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.ledger import PrivacyLedger, dataset_id, study_epsilon
from fedfusion.protocol import METRICS_RECORD, NOISE_MULTIPLIER_KEY
from fedfusion.site.client_app import app
from fedfusion.study.identity import derived_study_id

TARGET = 3.0


def _sent_noise(grid: LoopbackGrid) -> dict[int, list[float]]:
    """Per node, the noise multiplier each of its train replies reported, as the coordinator received them."""
    replies: list[Message] = [message_from_bytes(payload) for payload in grid.received]
    sent: dict[int, list[float]] = {}
    for reply in replies:
        metrics = reply.content.metric_records.get(METRICS_RECORD)
        if reply.metadata.message_type == "train" and metrics is not None:
            sent.setdefault(reply.metadata.src_node_id, []).append(float(metrics[NOISE_MULTIPLIER_KEY]))
    return sent


@pytest.mark.parametrize("accountant, num_sites", [pytest.param("prv", 2, marks=pytest.mark.slow), ("rdp", 1)])
def test_budget_derived_noise_never_exceeds_the_target_over_a_whole_study(small_cohort: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str],
                                                                          accountant: str, num_sites: int) -> None:
    """The non-slow variant runs one site (each site calibrates once, some seconds on a loaded machine)."""
    study = small_study(small_cohort, num_server_rounds=3, target_epsilon=TARGET, noise_multiplier=0.1)
    sites = read_cohort_index(small_cohort).sites[:num_sites]
    policy = tmp_path / "policy.toml"
    policy.write_text(f'accountant = "{accountant}"\nmin-eval-patients = 1\n')  # the site's accountant calibrates
    configs = {100 + i: deployed_node_config(site, tmp_path / "cache", tmp_path / f"ledger-{site.name}", policy)
               for i, site in enumerate(sites)}
    grid = LoopbackGrid(app, configs, study.to_run_config())
    strategy = SecurePatientWeightedFedAvg(min_sites=len(sites), secure_aggregation="off",
                                           threshold_fraction=study.secure_aggregation_threshold)
    strategy.start(grid, ArrayRecord(build_model(study, seed=study.training_seed).state_dict()),
                   num_rounds=study.num_server_rounds, timeout=120)
    sent_noise = _sent_noise(grid)

    for node, site in zip(configs, sites, strict=True):
        ledger = PrivacyLedger(tmp_path / f"ledger-{site.name}", dataset_id(site.name, site.site_dir))
        (calibration,) = ledger.calibrations()
        assert calibration.accountant == accountant
        rounds = ledger.rounds()
        assert calibration.study_id == derived_study_id(study)
        assert [(r.server_round, r.status) for r in rounds] == [(1, "settled"), (2, "settled"), (3, "settled")]
        assert {entry[0] for r in rounds for entry in r.counted} == {calibration.noise_multiplier}
        assert calibration.noise_multiplier > 0.1  # the study's fixed noise is not what trained
        spent = study_epsilon(rounds, calibration)
        assert 0.9 * TARGET <= spent <= TARGET, (site.name, spent)
        assert sent_noise[node] == [calibration.noise_multiplier] * study.num_server_rounds
        assert main(["site", "privacy", str(ledger.directory), "--policy", str(policy)]) == 0
        assert (f"study {calibration.study_id}: target epsilon {TARGET} at delta {study.delta} ({accountant}) -> "
                f"noise multiplier {calibration.noise_multiplier:.4f}") in capsys.readouterr().out
