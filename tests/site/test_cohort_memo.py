"""The cohort memo of a long-lived site process: read once, read again when the files it comes from change (real
GBSG2 tables, the real loader)."""

from __future__ import annotations

from pathlib import Path

from fedfusion.data.public_cohorts import write_gbsg2
from fedfusion.privacy.site_policy import SitePolicy
from fedfusion.site.cohort_memo import load_cohort_once
from fedfusion.site.node_context import SiteContext
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import load_schema


def test_the_cohort_is_read_once_and_again_after_its_tables_change(tmp_path: Path) -> None:
    site_dir = write_gbsg2(tmp_path / "gbsg2")
    study = StudyConfig(schema=load_schema(site_dir / "study.toml").to_json())
    site = SiteContext(name="gbsg2", data_dir=site_dir, cache_dir=None, device="cpu", fallback_mpp=None)
    split = SitePolicy().split
    first = load_cohort_once(site, study, split)
    assert load_cohort_once(site, study, split) is first
    ledger = site_dir / ".fedfusion-ledger"  # the default ledger folder is written every round: not data
    ledger.mkdir()
    (ledger / "gbsg2.json").write_text("{}")
    assert load_cohort_once(site, study, split) is first

    clinical = site_dir / "clinical.csv"
    lines = clinical.read_text().splitlines(keepends=True)
    clinical.write_text("".join(lines[:-10]))  # the admin removes 10 patients while a study runs
    again = load_cohort_once(site, study, split)
    assert again is not first
    assert len(again.train) + len(again.test) + len(again.validation) == \
        len(first.train) + len(first.test) + len(first.validation) - 10
    assert load_cohort_once(site, study, split) is again
