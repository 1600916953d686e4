"""The site's privacy ledger: exact Opacus epsilon, charged before training, refuses over budget, survives
restarts and kills, and is what the real ClientApp trains against."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flower_site import call_site, deployed_node_config, small_study
from opacus.accountants import create_accountant

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.errors import PrivacyError
from fedfusion.privacy.accounting import planned_round
from fedfusion.privacy.ledger import PrivacyLedger, dataset_id
from fedfusion.privacy.site_policy import SitePolicy

TESTS_DIR = Path(__file__).resolve().parents[1]  # where the shared test helpers (flower_site) live
ROUNDS = [(1.0, 1 / 3, 6), (1.0, 1 / 3, 6), (1.5, 1 / 4, 8)]


def _ledger(tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "ledger", dataset_id("site-x", tmp_path / "data"))


def _spend(ledger: PrivacyLedger, rounds: list[tuple[float, float, int]], policy: SitePolicy | None = None) -> None:
    policy = policy or SitePolicy()
    for number, entry in enumerate(rounds, start=1):
        charge = ledger.charge(run_id=1, server_round=number, planned=[entry], policy=policy)
        ledger.settle(charge, [entry])


@pytest.mark.parametrize("mechanism", ["prv", "rdp"])
def test_ledger_epsilon_equals_one_opacus_accountant_over_the_same_steps(tmp_path: Path, mechanism: str) -> None:
    ledger = _ledger(tmp_path)
    _spend(ledger, ROUNDS)
    accountant = create_accountant(mechanism=mechanism)
    for sigma, rate, steps in ROUNDS:
        for _ in range(steps):
            accountant.step(noise_multiplier=sigma, sample_rate=rate)
    assert ledger.history() == [tuple(entry) for entry in accountant.history]
    assert ledger.epsilon(mechanism, 1e-5) == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-9)


def test_round_over_budget_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _spend(ledger, ROUNDS[:1])
    before = ledger.path.read_bytes()
    budget = SitePolicy(max_epsilon=ledger.epsilon("prv", 1e-5) + 0.1)
    with pytest.raises(PrivacyError, match=r"site site-x refuses round 2: rule 'max-epsilon'"):
        ledger.charge(run_id=1, server_round=2, planned=[ROUNDS[1]], policy=budget)
    assert ledger.path.read_bytes() == before


def test_non_dp_round_spends_infinite_epsilon(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(PrivacyError, match="max-epsilon"):
        ledger.charge(run_id=1, server_round=1, planned=None, policy=SitePolicy(max_epsilon=1e9))
    ledger.charge(run_id=1, server_round=1, planned=None, policy=SitePolicy(max_epsilon=float("inf")))
    assert ledger.epsilon("prv", 1e-5) == float("inf")


def test_settling_never_counts_fewer_steps_than_charged(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    fewer = ledger.settle(ledger.charge(run_id=1, server_round=1, planned=[(1.0, 0.25, 8)], policy=SitePolicy()),
                          [(1.0, 0.25, 5)])
    more = ledger.settle(ledger.charge(run_id=1, server_round=2, planned=[(1.0, 0.25, 8)], policy=SitePolicy()),
                         [(1.0, 0.25, 9), (2.0, 0.25, 1)])
    assert (fewer.counted, fewer.reconciled) == ([(1.0, 0.25, 8)], True)
    assert (more.counted, more.reconciled) == ([(1.0, 0.25, 9), (2.0, 0.25, 1)], True)
    assert ledger.history() == [(1.0, 0.25, 17), (2.0, 0.25, 1)]


def test_ledger_survives_a_restart_in_a_new_process(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _spend(ledger, ROUNDS)
    script = ("import sys; from pathlib import Path; from fedfusion.privacy.ledger import PrivacyLedger, dataset_id; "
              "l = PrivacyLedger(Path(sys.argv[1]), dataset_id('site-x', Path(sys.argv[2]))); "
              "print(l.epsilon('prv', 1e-5), len(l.rounds()))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ledger"), str(tmp_path / "data")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) == ledger.epsilon("prv", 1e-5) and int(out[1]) == 3


def test_unreadable_ledger_refuses_instead_of_restarting_from_zero(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _spend(ledger, ROUNDS[:1])
    ledger.path.write_text(ledger.path.read_text()[:-20])
    with pytest.raises(PrivacyError, match=r"site site-x: privacy ledger .* is unreadable"):
        ledger.charge(run_id=1, server_round=2, planned=[ROUNDS[1]], policy=SitePolicy())


# ---- through the real ClientApp ----------------------------------------------------------------


def test_client_app_charges_the_planned_steps_and_settles_them_exactly(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    study = small_study(small_cohort)
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger")
    replies = [call_site("train", study, config, server_round=r) for r in (1, 2)]
    assert not any(reply.has_error() for reply in replies), [r.error for r in replies if r.has_error()]
    restarted = PrivacyLedger(tmp_path / "ledger", dataset_id(site.name, site.site_dir))
    rounds = restarted.rounds()
    patients = int(replies[0].content["metrics"]["num-examples"])
    assert [(r.status, r.reconciled) for r in rounds] == [("settled", False)] * 2
    assert all(r.counted == planned_round(study.noise_multiplier, patients, study.batch_size, study.local_epochs)
               for r in rounds)
    assert replies[1].content["metrics"]["epsilon"] == pytest.approx(restarted.epsilon(study.accountant, study.delta))


def test_client_app_refuses_the_round_that_would_exceed_the_budget(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    study = small_study(small_cohort)
    policy = tmp_path / "policy.toml"
    policy.write_text("max-epsilon = 5.0\n")  # one round of the small study spends about 4.6
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger", policy)
    first, second = (call_site("train", study, config, server_round=r) for r in (1, 2))
    assert not first.has_error()
    assert second.has_error() and second.error.code == 3002
    assert second.error.reason.startswith(f"site {site.name} refuses round 2: rule 'max-epsilon' (5.0)")
    assert len(PrivacyLedger(tmp_path / "ledger", dataset_id(site.name, site.site_dir)).rounds()) == 1


def test_a_kill_during_training_leaves_the_round_charged(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    study = small_study(small_cohort, local_epochs=300)  # 900 steps: long enough to be killed while training
    policy = tmp_path / "policy.toml"
    policy.write_text("max-epsilon = inf\n")
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger", policy)
    script = (f"import json, sys; sys.path.insert(0, {str(TESTS_DIR)!r}); "
              "from fedfusion.study.config import StudyConfig; "
              "from flower_site import call_site; "
              "call_site('train', StudyConfig.from_run_config(json.loads(sys.argv[1])), json.loads(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(study.to_run_config()), json.dumps(config)])
    ledger = PrivacyLedger(tmp_path / "ledger", dataset_id(site.name, site.site_dir))
    try:
        deadline = time.monotonic() + 120
        while not ledger.path.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the site process finished before it could be killed"
    (charged,) = ledger.rounds()
    assert charged.status == "charged" and charged.counted == charged.planned
    assert charged.counted[0][2] == 300 * int(1 / charged.counted[0][1])
    assert ledger.epsilon("prv", 1e-5) > 0
