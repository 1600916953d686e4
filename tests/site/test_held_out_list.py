"""A site keeps the list of its held-out patients for each study beside its ledger, and sends none of it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from flower_site import call_site, deployed_node_config, small_study

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.data.patient_split import is_test_patient
from fedfusion.site.held_out_list import held_out_path
from fedfusion.study.run_config import StudyRun


def test_train_round_writes_the_held_out_list_at_the_site(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    study = small_study(small_cohort)
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger")
    reply = call_site("train", study, config)
    assert not reply.has_error(), reply.error
    listed = pd.read_csv(held_out_path(tmp_path / "ledger", StudyRun.of(study).study_id), dtype=str)
    everyone = pd.read_csv(site.site_dir / "clinical.csv", dtype=str)["patient_id"]
    expected = [pid for pid in everyone if is_test_patient(pid, study.seed, study.test_fraction)]
    assert sorted(listed["patient_id"]) == sorted(expected) and set(listed["split"]) == {"test"}
    sent = repr(reply.content)
    assert not any(pid in sent for pid in everyone), "a patient id left the site"
