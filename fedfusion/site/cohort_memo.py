"""Load a site's cohort once per process, and again only when its prepared files change.

A ClientApp is called every round and the data rarely changes. Tile features are cached on disk by the data path;
this memo avoids re-reading the tables and feature files within one long-lived process (a simulation actor or a
site's worker, ``fedfusion.deployment.site.site_worker``). Before each use it compares a fingerprint of the files
the cohort is read from (name, size and modification time of every file under the site's data folder, hidden
folders left out, and under its feature cache, plus the encoder file): a site admin who edits a table or runs
``fedfusion site prepare`` again while a study runs gets the new data at the next message, without a restart.
The default ledger folder (``.fedfusion-ledger``, written every round) is hidden, so it is not part of it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.patient_records import SiteCohort
from fedfusion.data.patient_split import PatientSplit
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME
from fedfusion.site.node_context import SiteContext
from fedfusion.study.config import StudyConfig

logger = logging.getLogger(__name__)

Fingerprint = frozenset[tuple[str, int, int]]
"""(path, size, modification time in ns) of every file a cohort is read from."""

_MEMO: dict[tuple[SiteContext, StudyConfig, PatientSplit], tuple[Fingerprint, SiteCohort]] = {}


def prepared_files_fingerprint(site: SiteContext) -> Fingerprint:
    """Name, size and modification time of the files a site's cohort is read from (see the module docstring)."""
    cache_dir = site.cache_dir if site.cache_dir is not None else site.data_dir / CACHE_DIRNAME
    files: list[tuple[str, int, int]] = []
    for root, skip_hidden in ((site.data_dir, True), (cache_dir, False)):
        for folder, subfolders, names in os.walk(root):
            if skip_hidden:
                subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            files.extend(_stat(Path(folder) / name) for name in names)
    if site.encoder_file is not None:
        files.append(_stat(site.encoder_file))
    return frozenset(files)


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except OSError:  # removed meanwhile: counts as a change
        return (str(path), -1, -1)
    return (str(path), stat.st_size, stat.st_mtime_ns)


def load_cohort_once(site: SiteContext, study: StudyConfig, split: PatientSplit) -> SiteCohort:
    """The site's cohort for this study, split by the site's ``split``: read from disk on first use in this process
    and again whenever the files it is read from have changed."""
    # Keyed by the whole (frozen, hashable) site context, study and split: a knob added later cannot be forgotten.
    key = (site, study, split)
    fingerprint = prepared_files_fingerprint(site)
    memo = _MEMO.get(key)
    if memo is not None and memo[0] == fingerprint:
        return memo[1]
    if memo is not None:
        logger.info("site %s: its data or prepared features changed; reading its cohort again", site.name)
    cohort = load_site_cohort(
        site.data_dir,
        study,
        cache_dir=site.cache_dir,
        fallback_mpp=site.fallback_mpp,
        encoder_file=site.encoder_file,
        skip_bad=site.skip_bad,
        split=split,
    )
    _MEMO[key] = (fingerprint, cohort)
    return cohort
