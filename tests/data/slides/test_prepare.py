"""Preparing a site's slide features ahead of any study, and a training load that only reads them.

``prepare_slide_features`` (``fedfusion site prepare``) extracts every slide of the manifest into the feature cache,
in parallel, each slide written atomically as it finishes; ``load_site_cohort`` reads the cache and refuses,
naming the command, when features are missing. A run killed with SIGKILL (a real subprocess) leaves no partial
entry and no worker behind, and the next run extracts only the rest.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from process_scan import processes_with_marker

from fedfusion.atomic_io import TEMP_SUFFIX
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.data.findings import Findings
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME, FeatureCache
from fedfusion.data.slides.prepare import LOCK_FILE, prepare_slide_features, slide_owners
from fedfusion.data.slides.slide_features import extract_slide_features
from fedfusion.data.slides.tiling import TilingParams
from fedfusion.data.synthetic import generate_cohort
from fedfusion.data.tables.manifest import parse_manifest
from fedfusion.errors import ConfigError, FeaturesNotPreparedError, SlideError
from fedfusion.study.config import StudyConfig

STUDY = StudyConfig()
KILL_COHORT = {"num_sites": 1, "seed": 21, "patients_per_site": (10,), "slide_size_px": 1536}
"""Ten single-slide patients: long enough to extract (two workers) that a kill lands mid-run."""


def _slides(site_dir: Path) -> dict[Path, str]:
    findings = Findings()
    owners = slide_owners(parse_manifest(site_dir / "manifest.csv", findings, STUDY.spec))
    assert not findings.errors
    return owners


def _site_copy(small_cohort: Path, tmp_path: Path, name: str = "site-b") -> Path:
    return shutil.copytree(small_cohort / name, tmp_path / "cohort" / name,
                           ignore=shutil.ignore_patterns(CACHE_DIRNAME))


def test_prepare_then_load_gives_the_features_of_the_lazy_path(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    cache = tmp_path / "cache"
    summary = prepare_slide_features(site.site_dir, STUDY, cache_dir=cache, device="cpu", workers=2)
    slides = _slides(site.site_dir)
    assert summary.ok and (summary.slides, summary.extracted, summary.cached) == (len(slides), len(slides), 0)
    cohort = load_site_cohort(site.site_dir, STUDY, cache_dir=cache)

    # What the loader computed inside the first round before: each slide extracted in this process, concatenated.
    params = TilingParams.from_study(STUDY)
    lazy = {path: extract_slide_features(path, params, STUDY.encoder) for path in slides}
    assert summary.tiles == sum(len(f) for f in lazy.values())
    records = {r.patient_id: r for r in cohort.train + cohort.test}
    findings = Findings()
    scaling = STUDY.spec.wsi_scaling  # the study-fixed scaling is applied when the records are built
    for entry in parse_manifest(site.site_dir / "manifest.csv", findings, STUDY.spec):
        if entry.slides:
            features = np.concatenate([lazy[s] for s in entry.slides])
            np.testing.assert_array_equal(records[entry.patient_id].tile_features,
                                          features if scaling is None else scaling.apply(features))
        else:
            assert records[entry.patient_id].tile_features is None

    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = prepare_slide_features(site.site_dir, STUDY, cache_dir=cache, device="cpu", workers=2)
    assert (again.cached, again.extracted, again.tiles) == (len(slides), 0, summary.tiles)
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir() if p.name != "prepare.lock"} == \
        {p: t for p, t in stamps.items() if p.name != "prepare.lock"}, "a second run rewrote the cache"


def test_a_load_without_prepared_features_names_the_command(small_cohort: Path, tmp_path: Path) -> None:
    site_dir = _site_copy(small_cohort, tmp_path)
    slides = list(_slides(site_dir))
    with pytest.raises(FeaturesNotPreparedError) as default_cache:
        load_site_cohort(site_dir, STUDY)
    assert str(default_cache.value) == (f"site site-b: features not prepared for {len(slides)} slides (e.g. "
                                        f"{slides[0]}): run fedfusion site prepare {site_dir}")
    assert not (site_dir / CACHE_DIRNAME).exists(), "a load must not write into the site's folder"

    cache = tmp_path / "elsewhere"
    study = STUDY.replace(target_mpp=1.0, stain_normalization="macenko")
    with pytest.raises(FeaturesNotPreparedError, match=(
            rf"features not prepared for {len(slides)} slides \(e.g. .*\): run fedfusion site prepare {site_dir} "
            rf"--cache-dir {cache} --set target-mpp=1.0 --set stain-normalization=macenko --fallback-mpp 0.25 "
            r"--skip-bad$")):
        load_site_cohort(site_dir, study, cache_dir=cache, fallback_mpp=0.25, skip_bad=True)

    assert prepare_slide_features(site_dir, STUDY, device="cpu").ok
    cache_entries = FeatureCache(site_dir / CACHE_DIRNAME)
    forgotten = slides[-1]
    (site_dir / CACHE_DIRNAME / f"{cache_entries.key(forgotten, STUDY.encoder, TilingParams.from_study(STUDY), None)}"
                                 ".npy").unlink()
    with pytest.raises(FeaturesNotPreparedError, match=rf"for 1 slides \(e.g. {forgotten}\)"):
        load_site_cohort(site_dir, STUDY)
    rerun = prepare_slide_features(site_dir, STUDY, device="cpu")
    assert (rerun.cached, rerun.extracted) == (len(slides) - 1, 1)
    assert load_site_cohort(site_dir, STUDY).num_patients == 12


def test_skip_bad_reports_every_bad_slide_and_prepares_the_rest(small_cohort: Path, tmp_path: Path) -> None:
    site_dir = _site_copy(small_cohort, tmp_path)
    owners = _slides(site_dir)
    truncated, empty = list(owners)[1], list(owners)[4]
    truncated.write_bytes(truncated.read_bytes()[:3000])
    empty.write_bytes(b"")

    # Without skip-bad the run stops at the first unusable slide found: the empty file, by the file checks that
    # come before any extraction.
    stopped = prepare_slide_features(site_dir, STUDY, device="cpu", workers=2)
    assert not stopped.ok and [f.slide for f in stopped.failures] == [empty] and stopped.extracted == 0
    assert stopped.not_attempted == len(owners) - 1
    assert f", {len(owners) - 1} not attempted (stopped at the first failure)" in stopped.describe()
    assert stopped.report().splitlines()[-1].startswith("FAILED: 1 slides could not be prepared; fix them, or "
                                                        "pass --skip-bad")

    summary = prepare_slide_features(site_dir, STUDY, device="cpu", workers=2, skip_bad=True)
    assert summary.ok and {f.slide for f in summary.failures} == {truncated, empty}
    assert (summary.extracted + summary.cached, summary.not_attempted) == (len(owners) - 2, 0)
    lines = summary.report().splitlines()
    assert lines[0] == summary.describe() and f", {len(owners) - 2} extracted, 2 failed (" in lines[0]
    assert lines[1] == "failed slides:"
    assert lines[2] == (f"  - patient {owners[empty]}: slide {empty}: file is empty (0 bytes): skipped with "
                        "--skip-bad (patient kept without this slide)")
    assert lines[3].startswith(f"  - patient {owners[truncated]}: slide {truncated}: file is truncated or corrupt")
    assert lines[3].endswith(": skipped with --skip-bad (patient kept without this slide)")
    assert lines[-1] == f"OK: features of {len(owners) - 2} slides ready in {site_dir / CACHE_DIRNAME}"

    with pytest.raises(SlideError, match=f"slide {truncated}: file is truncated or corrupt"):
        load_site_cohort(site_dir, STUDY)  # the site stops unless it skips bad slides too
    cohort = load_site_cohort(site_dir, STUDY, skip_bad=True)
    skipped = [n for n in cohort.notes if n.startswith("skipped slide of patient")]
    assert len(skipped) == 2 and any(f"slide {truncated}: file is truncated" in n for n in skipped)

    rerun = prepare_slide_features(site_dir, STUDY, device="cpu", skip_bad=True)
    assert (rerun.cached, rerun.extracted, len(rerun.failures)) == (len(owners) - 2, 0, 2)


def test_a_killed_prepare_leaves_no_partial_entry_and_a_rerun_extracts_only_the_rest(tmp_path: Path) -> None:
    cohort = generate_cohort(tmp_path / "cohort", **KILL_COHORT)  # type: ignore[arg-type]
    site_dir = cohort / "site-a"
    cache = site_dir / CACHE_DIRNAME
    slides = _slides(site_dir)
    marker = uuid.uuid4().hex
    env = {**os.environ, "FEDFUSION_TEST_MARKER": marker}
    command = [sys.executable, "-m", "fedfusion.cli", "site", "prepare", str(site_dir), "--workers", "2",
               "--device", "cpu"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(cache.glob("*.npy")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, "prepare ended before it could be killed"
        deadline = time.monotonic() + 15
        while processes_with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        orphans = processes_with_marker(marker)
        assert not orphans, "the extraction workers outlived the killed prepare"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        for pid in processes_with_marker(marker):
            os.kill(pid, signal.SIGKILL)

    entries = sorted(cache.glob("*.npy"))
    assert 1 <= len(entries) < len(slides), f"{len(entries)} of {len(slides)} slides done when killed"
    for entry in entries:  # every entry under its final name is whole
        features = np.load(entry, allow_pickle=False)
        assert features.ndim == 2 and features.shape[1] == 64 and np.isfinite(features).all()

    # A kill rarely lands inside a write (milliseconds); plant the temporary file such a kill leaves.
    debris = cache / f".{entries[0].stem[::-1]}.npy.k1ll3d{TEMP_SUFFIX}"
    debris.write_bytes(entries[0].read_bytes()[:100])
    rerun = prepare_slide_features(site_dir, STUDY, device="cpu", workers=2)
    assert (rerun.cached, rerun.extracted, rerun.failures) == (len(entries), len(slides) - len(entries), ())
    assert len(list(cache.glob("*.npy"))) == len(slides)
    assert not list(cache.glob(f"*{TEMP_SUFFIX}")) and not list(cache.glob(f".*{TEMP_SUFFIX}")), \
        "a temporary file of the killed run is left"
    cohort_records = load_site_cohort(site_dir, STUDY)
    assert sum(r.tile_features is not None for r in cohort_records.train + cohort_records.test) == len(slides)


def test_one_prepare_at_a_time_per_cache(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[1]
    cache = tmp_path / "cache"
    cache.mkdir()
    with open(cache / LOCK_FILE, "a+") as held:  # another prepare is running on this cache
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match=f"feature cache {cache}: another `fedfusion site prepare` is writing"):
            prepare_slide_features(site.site_dir, STUDY, cache_dir=cache, device="cpu")
    assert not list(cache.glob("*.npy"))
