"""Read a site's prepared slide features from its feature cache; never extract.

The training side of ``prepare.py``: every slide of the manifest must have an entry in the cache (written by
``fedfusion site prepare``). A slide whose preparation failed is a ``SlideError`` with the message recorded then
(or, with ``skip_bad``, a note and its patient kept without it); a slide without any entry makes the whole load
fail with ``FeaturesNotPreparedError``, naming the command that prepares them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedfusion.data.slides.feature_cache import FeatureCache
from fedfusion.data.slides.prepare import prepare_command, slide_owners
from fedfusion.data.slides.slide_reader import check_slide_file
from fedfusion.data.slides.tiling import TilingParams
from fedfusion.data.tables.manifest import ManifestEntry
from fedfusion.errors import FeaturesNotPreparedError, SlideError
from fedfusion.study.config import StudyConfig


def read_prepared_features(site_dir: Path, entries: list[ManifestEntry], study: StudyConfig, cache: FeatureCache,
                           *, cache_dir: Path | None, fallback_mpp: float | None, skip_bad: bool,
                           encoder_file: Path | None) -> tuple[dict[Path, npt.NDArray[np.float32]], list[str]]:
    """Features of every slide of ``entries`` from ``cache``, and notes on slides skipped as bad.

    A bad slide raises its ``SlideError`` (or with ``skip_bad`` is noted); if any slide is neither cached nor
    known bad, ``FeaturesNotPreparedError`` names the command (``cache_dir`` as the caller gave it: None is the
    default folder) that prepares the site.
    """
    params = TilingParams.from_study(study)
    owners = slide_owners(entries)
    features: dict[Path, npt.NDArray[np.float32]] = {}
    notes: list[str] = []
    missing: list[Path] = []

    def fail(path: Path, error: SlideError) -> None:
        if not skip_bad:
            raise error
        notes.append(f"skipped slide of patient {owners[path]}: {error}")

    for path in owners:
        try:
            check_slide_file(path)
        except SlideError as error:
            fail(path, error)
            continue
        key = cache.key(path, study.encoder, params, fallback_mpp)
        cached = cache.load(key)
        if cached is not None:
            features[path] = cached
            continue
        failure = cache.failure(key)
        if failure is not None:
            fail(path, SlideError(failure))
        else:
            missing.append(path)
    if missing:
        raise FeaturesNotPreparedError(site_dir.name, missing, prepare_command(
            site_dir, study, cache_dir=cache_dir, fallback_mpp=fallback_mpp, encoder_file=encoder_file,
            skip_bad=skip_bad))
    return features, notes
