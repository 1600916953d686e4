"""A short federated radiogenomics study (radiology + omics + clinical) in Flower's simulation engine, on a generated
cohort of DICOM CT series and NIfTI masks; every message the sites sent is scanned for DICOM header values (patient
names, birth dates, accession numbers, UIDs) and patient ids. Slow: deselect with -m "not slow"."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from flower_site import small_study
from radiology_site import header_values

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.data.synthetic import generate_cohort
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.site_policy import POLICY_FILE_NAME
from fedfusion.simulation.local_study import simulate_study
from fedfusion.simulation.simulated_nodes import SIMULATED_SITES_DIR
from fedfusion.site.egress_gate import PAYLOAD_DIR

pytestmark = pytest.mark.slow


def test_radiogenomics_study_trains_and_no_header_value_leaves(tmp_path: Path) -> None:
    cohort_dir = generate_cohort(tmp_path / "cohort", num_sites=2, seed=11, patients_per_site=[12, 10],
                                 radiology=True, workers=1)
    sites = read_cohort_index(cohort_dir).sites
    for site in sites:
        (site.site_dir / POLICY_FILE_NAME).write_text("keep-egress-payloads = true\n")
    study = small_study(cohort_dir, num_server_rounds=1)
    assert study.modalities == "omics,clinical,radiology"
    lines: list[str] = []
    result = simulate_study(study, results_dir=tmp_path / "results", cohort_dir=cohort_dir, emit=lines.append)
    assert result.trained and result.report is not None

    secrets: set[str] = set()
    for site in sites:
        secrets |= header_values(site.site_dir)
        secrets |= set(pd.read_csv(site.site_dir / "manifest.csv", dtype=str)["patient_id"])
    assert len(secrets) > 7 * 15  # 7 identifying values per scan (one UID per slice too), patient ids
    assert not [s for s in secrets if s in "\n".join(lines)]
    scanned = 0
    for site in sites:
        ledger_dir = tmp_path / "results" / SIMULATED_SITES_DIR / site.name
        for entry in EgressRecord(ledger_dir / EGRESS_FILE).entries():
            payload = (ledger_dir / PAYLOAD_DIR / f"{entry['sha256']}.pb").read_bytes()
            leaked = [s for s in secrets if s.encode() in payload or s.encode("utf-16-le") in payload]
            assert not leaked, f"{site.name} message #{entry['seq']} carries {leaked[:3]}"
            scanned += 1
    assert scanned >= 2 * 2  # train + evaluate, 2 sites
