"""Secure aggregation inside `fedfusion simulate` (Flower's simulation engine, Ray), as a user runs it.

3 sites, 1 round, without DP so that training is deterministic: the default run (secure-aggregation = "auto",
on with more than 2 sites) and one with secure-aggregation = off must end with the same model within the
quantization error, and nothing any site sent in the secure run holds its weights. Slow: deselect with
-m "not slow".
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from process_scan import processes_with_marker

from fedfusion.coordinator.run_recorder import MODEL_FILE, ROUND_METRICS_FILE
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.data.synthetic import generate_cohort
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.site_policy import POLICY_FILE_NAME
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.simulation.simulated_nodes import SIMULATED_SITES_DIR
from fedfusion.site.egress_gate import PAYLOAD_DIR

pytestmark = pytest.mark.slow
SITES = 3


def simulate(cohort_dir: Path, results_dir: Path, *settings: str) -> None:
    """`fedfusion simulate` in a subprocess, 3 sites, 1 round, no DP; fails if it leaves a process behind."""
    marker = uuid.uuid4().hex
    env = {**os.environ, "FEDFUSION_TEST_MARKER": marker}
    command = [sys.executable, "-m", "fedfusion.cli", "simulate", "--sites", str(SITES), "--rounds", "1",
               "--cohort-dir", str(cohort_dir), "--results-dir", str(results_dir), "--set", "dp=false",
               "--set", "hidden-dim=8", "--set", "local-epochs=1", "--set", "batch-size=4",
               "--set", "tiles-per-patient=4"]
    for setting in settings:
        command += ["--set", setting]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=cohort_dir.parent)
    leftovers = processes_with_marker(f"FEDFUSION_TEST_MARKER={marker}")  # none once it returns: Ray is reaped
    for pid in leftovers:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not leftovers, f"simulate left processes running: {leftovers}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The cohort and the results of a default (secure) run and a plain run of the same study."""
    work = tmp_path_factory.mktemp("secagg-sim")
    cohort_dir = generate_cohort(work / "cohort", num_sites=SITES, seed=4, patients_per_site=[16, 12, 20],
                                 slide_size_px=1024)
    for site in read_cohort_index(cohort_dir).sites:
        (site.site_dir / POLICY_FILE_NAME).write_text(
            "dp-mandatory = false\nmax-epsilon = inf\nkeep-egress-payloads = true\nmin-eval-patients = 1\n")
    simulate(cohort_dir, work / "secure")
    simulate(cohort_dir, work / "plain", "secure-aggregation=off")
    return cohort_dir, work / "secure", work / "plain"


def test_default_simulation_aggregates_securely_and_equals_plain_fedavg(runs: tuple[Path, Path, Path]) -> None:
    _, secure_dir, plain_dir = runs
    secure_rounds = pd.read_csv(secure_dir / ROUND_METRICS_FILE)
    train = secure_rounds[secure_rounds["phase"] == "train"]
    assert list(train["secure-aggregation-sites"]) == [SITES]
    assert "secure-aggregation-sites" not in pd.read_csv(plain_dir / ROUND_METRICS_FILE)
    secure = torch.load(secure_dir / MODEL_FILE, weights_only=True)
    plain = torch.load(plain_dir / MODEL_FILE, weights_only=True)
    error = max(float((secure[k].double() - plain[k].double()).abs().max()) for k in plain)
    bound = SITES * SecAggConfig(num_sites=SITES, threshold=SITES).step + 1e-6  # quantization + float32
    print(f"fedfusion simulate, {SITES} sites: max |secure - plain FedAvg| = {error:.3g}")
    assert 0 < error <= bound


def test_no_site_sent_its_weights_in_the_secure_run(runs: tuple[Path, Path, Path]) -> None:
    cohort_dir, secure_dir, _ = runs
    for site in read_cohort_index(cohort_dir).sites:
        ledger_dir = secure_dir / SIMULATED_SITES_DIR / site.name
        record = EgressRecord(ledger_dir / EGRESS_FILE)
        assert record.verify_chain() == len(record.entries())
        sent = [e for e in record.entries() if e["kind"] in ("train", "query")]
        assert [e["kind"] for e in sent] == ["train", "query", "query", "query"]
        assert all(e["secure-aggregation"] for e in sent)
        for entry in sent:
            message = message_from_proto(ProtoMessage.FromString(
                (ledger_dir / PAYLOAD_DIR / f"{entry['sha256']}.pb").read_bytes()))
            arrays = [a for r in message.content.array_records.values() for a in r.values()]
            assert all(a.numpy().dtype.name == "uint32" for a in arrays), site.name  # masked words only
        assert [len(e["arrays"]) for e in sent] == [0, 0, 1, 0]
