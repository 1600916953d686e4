"""What sites really send in a short Flower simulation: every serialized message, kept by the egress mod, is
scanned for patient identifiers and for anything with one value per patient. Slow: deselect with -m "not slow".

How the per-patient check stays honest: a per-patient quantity can only leave as an array or as a list-valued
metric/config. So every array in every message must have the name and shape of a parameter of the study's
model (fixed by the study config before any patient is seen), and every metric and config value must be a
scalar. A dimension that equals a patient count by coincidence of the model's shapes therefore passes, and
anything else shaped by the patients fails.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from flower_site import small_study
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.data.synthetic import generate_cohort
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.site_policy import POLICY_FILE_NAME
from fedfusion.simulation.local_study import simulate_study
from fedfusion.simulation.simulated_nodes import SIMULATED_SITES_DIR
from fedfusion.site.egress_gate import PAYLOAD_DIR

pytestmark = pytest.mark.slow
ROUNDS = 2


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-site, 2-round DP simulation whose sites keep a copy of every message they send."""
    work = tmp_path_factory.mktemp("egress-sim")
    cohort_dir = generate_cohort(work / "cohort", num_sites=2, seed=5, patients_per_site=[36, 28], slide_size_px=1024)
    for site in read_cohort_index(cohort_dir).sites:
        (site.site_dir / POLICY_FILE_NAME).write_text("keep-egress-payloads = true\nmin-eval-patients = 1\n")
    simulate_study(small_study(cohort_dir, num_server_rounds=ROUNDS), results_dir=work / "results",
                   cohort_dir=cohort_dir, emit=lambda _: None)
    return cohort_dir


def _sent(cohort_dir: Path) -> list[tuple[str, dict, bytes]]:
    """(site, record entry, serialized message) for every message every site sent, checked against the record."""
    sent = []
    for site in read_cohort_index(cohort_dir).sites:
        ledger_dir = cohort_dir.parent / "results" / SIMULATED_SITES_DIR / site.name  # a simulation's own ledgers
        record = EgressRecord(ledger_dir / EGRESS_FILE)
        assert record.verify_chain() == len(record.entries()) > 0
        for entry in record.entries():
            payload = (ledger_dir / PAYLOAD_DIR / f"{entry['sha256']}.pb").read_bytes()
            assert hashlib.sha256(payload).hexdigest() == entry["sha256"] and len(payload) == entry["bytes"]
            sent.append((site.name, entry, payload))
    return sent


def _patient_identifiers(cohort_dir: Path) -> set[str]:
    ids: set[str] = set()
    for site in read_cohort_index(cohort_dir).sites:
        manifest = pd.read_csv(site.site_dir / "manifest.csv", dtype=str)
        ids |= set(manifest["patient_id"]) | set(manifest["omics_sample"].dropna())
        ids |= {Path(slide).stem for slides in manifest["slides"].dropna() for slide in slides.split(";")}
    return ids


def test_every_site_recorded_every_round_it_sent(simulated: Path) -> None:
    kinds = {(site, entry["kind"], entry["round"]) for site, entry, _ in _sent(simulated)}
    for site in read_cohort_index(simulated).sites:
        assert {(site.name, "train", r) for r in range(1, ROUNDS + 1)} <= kinds


def test_no_patient_identifier_leaves_a_site(simulated: Path) -> None:
    identifiers = _patient_identifiers(simulated)
    assert len(identifiers) > 36 + 28  # patient ids and RNA sample ids (and slide names) of both sites
    for site, entry, payload in _sent(simulated):
        leaked = [i for i in identifiers if i.encode() in payload or i.encode("utf-16-le") in payload]
        assert not leaked, f"{site} message #{entry['seq']} carries {leaked[:5]}"


def test_nothing_with_one_value_per_patient_leaves_a_site(simulated: Path) -> None:
    study = small_study(simulated, num_server_rounds=ROUNDS)
    model_shapes = {name: tuple(t.shape) for name, t in build_model(study).state_dict().items()}
    for site, entry, payload in _sent(simulated):
        message = message_from_proto(ProtoMessage.FromString(payload))
        assert not message.has_error(), f"{site}: {message.error.reason}"
        arrays = {name: tuple(a.shape)
                  for record in message.content.array_records.values() for name, a in record.items()}
        assert arrays == (model_shapes if entry["kind"] == "train" else {}), site
        values = [v for record in [*message.content.metric_records.values(), *message.content.config_records.values()]
                  for v in record.values()]
        assert values and all(isinstance(v, (int, float, str)) for v in values), (site, entry["seq"])
