"""Load a site's cohort once per process: a ClientApp is called every round, the data does not change.

Tile features are cached on disk by the data path; this memo only avoids re-reading the tables and
feature files within one long-lived process (a simulation actor or a site daemon's app process).
"""

from __future__ import annotations

from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.patient_records import SiteCohort
from fedfusion.data.patient_split import PatientSplit
from fedfusion.site.node_context import SiteContext
from fedfusion.study.config import StudyConfig

_MEMO: dict[tuple[SiteContext, StudyConfig, PatientSplit], SiteCohort] = {}


def load_cohort_once(site: SiteContext, study: StudyConfig, split: PatientSplit) -> SiteCohort:
    """The site's cohort for this study, split by the site's ``split``, read from disk on first use in this process."""
    # Keyed by the whole (frozen, hashable) site context, study and split: a knob added later cannot be forgotten.
    key = (site, study, split)
    if key not in _MEMO:
        _MEMO[key] = load_site_cohort(
            site.data_dir,
            study,
            cache_dir=site.cache_dir,
            fallback_mpp=site.fallback_mpp,
            encoder_file=site.encoder_file,
            skip_bad=site.skip_bad,
            split=split,
        )
    return _MEMO[key]
