"""End to end: `fedfusion simulate` killed (SIGKILL, with every process it started) after its round-1 checkpoint
and after both sites answered round 2, but before round 2 was checkpointed; run again with the same command, it
resumes at round 2, the sites replay their stored round-2 replies, each round is recorded once and charged to each
site's ledger once. Real Flower simulation engine (Ray), real Opacus, real slides. Slow."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from process_scan import processes_with_marker

from fedfusion.coordinator.checkpoint import CHECKPOINT_DIR, STATE_FILE
from fedfusion.data.synthetic import generate_cohort
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.ledger import LedgerRound, PrivacyLedger, ledgers_in
from fedfusion.simulation.simulated_nodes import SIMULATED_SITES_DIR
from fedfusion.site.round_replay import REPLIES_DIR
from fedfusion.study.config import StudyConfig
from fedfusion.study.identity import derived_study_id

pytestmark = pytest.mark.slow

ROUNDS = 3
SITES = ("site-a", "site-b")



def _entries(ledger: PrivacyLedger, study: str, server_round: int) -> list[LedgerRound]:
    """The ledger's entries of one study round (more than one when it was charged again)."""
    return [r for r in ledger.rounds() if (r.study_id, r.server_round) == (study, server_round)]


def _kill_all(marker: str) -> None:
    """SIGKILL every process carrying ``marker`` until none is left (Ray may still be starting one)."""
    deadline = time.monotonic() + 30
    while (pids := processes_with_marker(marker)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    assert not processes_with_marker(marker), "processes survived SIGKILL"


def _left_running(marker: str, grace_s: float = 10.0) -> list[str]:
    """Command lines of marked processes still alive ``grace_s`` after a run ended (Ray stops asynchronously)."""
    deadline = time.monotonic() + grace_s
    while (pids := processes_with_marker(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = []
    for pid in pids:
        try:
            lines.append(f"{pid}: " + (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return lines


def _both_sent_round_2(results_dir: Path) -> bool:
    """True once every site's egress record holds its round-2 training reply (and its stored copy exists)."""
    for site in SITES:
        site_dir = results_dir / SIMULATED_SITES_DIR / site
        try:
            sent = [json.loads(line) for line in (site_dir / EGRESS_FILE).read_bytes().splitlines()]
        except (OSError, ValueError):
            return False
        if not any(e["kind"] == "train" and e["round"] == 2 for e in sent):
            return False
        if not list(site_dir.glob(f"{REPLIES_DIR}/*/*/round-2.pt")):
            return False
    return True


def _completed_round(results_dir: Path) -> int:
    try:
        return int(json.loads((results_dir / CHECKPOINT_DIR / STATE_FILE).read_text())["completed_round"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_coordinator_resumes_without_repeating_rounds_or_privacy_spend(tmp_path: Path) -> None:
    cohort_dir, results_dir = tmp_path / "cohort", tmp_path / "results"
    generate_cohort(cohort_dir, num_sites=2, seed=3, patients_per_site=[40, 30], slide_size_px=1024)
    command = [sys.executable, "-m", "fedfusion.cli", "simulate", "--sites", "2", "--rounds", str(ROUNDS),
               "--cohort-dir", str(cohort_dir), "--results-dir", str(results_dir), "--set", "local-epochs=1"]
    marker = uuid.uuid4().hex
    env = {**os.environ, "FEDFUSION_TEST_MARKER": marker}

    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not _both_sent_round_2(results_dir) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        _kill_all(marker)
        first.wait()
    assert first.returncode == -signal.SIGKILL, "simulate finished or failed before it could be killed"
    assert _completed_round(results_dir) == 1, "killed after round 2 was checkpointed: nothing to replay"
    assert not (results_dir / "round_metrics.csv").exists()  # results are written only at the end

    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=500)
    leftovers = _left_running(marker)
    _kill_all(marker)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert not leftovers, f"simulate left processes running: {leftovers}"
    study = StudyConfig.from_run_config(json.loads((results_dir / "config.json").read_text()))
    name = derived_study_id(study)
    output = second.stdout + second.stderr
    assert f"resuming study {name} at round 2 of {ROUNDS}" in output
    assert "[round 1/3] train" not in output  # rounds already done are not run again

    rounds = pd.read_csv(results_dir / "round_metrics.csv")
    assert sorted(zip(rounds["round"], rounds["phase"], strict=True)) == sorted(
        (r, phase) for r in range(1, ROUNDS + 1) for phase in ("train", "evaluate"))
    sites = pd.read_csv(results_dir / "site_metrics.csv")
    assert not sites.duplicated(["round", "phase", "site"]).any() and len(sites) == ROUNDS * 2 * len(SITES)

    for site in SITES:
        site_dir = results_dir / SIMULATED_SITES_DIR / site
        (ledger,) = ledgers_in(site_dir)
        for server_round in range(1, ROUNDS + 1):
            assert len(_entries(ledger, name, server_round)) == 1, (site, server_round, ledger.rounds())
        final_eps = sites[(sites["site"] == site) & (sites["phase"] == "train") & (sites["round"] == ROUNDS)]
        assert float(final_eps["epsilon"].iloc[0]) == pytest.approx(ledger.epsilon(study.accountant, study.delta))
        # Round 2 left the site twice, the same update both times (the replay), and is on its egress record.
        sent = [e for e in EgressRecord(site_dir / EGRESS_FILE).entries() if e["kind"] == "train"]
        assert [e["round"] for e in sent] == [1, 2, 2, 3]
        assert sent[1]["arrays"] == sent[2]["arrays"] and sent[1]["metrics"] == sent[2]["metrics"]

    ledger_files = {p: p.read_bytes() for p in (results_dir / SIMULATED_SITES_DIR).rglob("*.json")}
    third = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _kill_all(marker)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert f"study {name} already finished ({ROUNDS} rounds); nothing to train" in third.stdout + third.stderr
    assert {p: p.read_bytes() for p in ledger_files} == ledger_files
