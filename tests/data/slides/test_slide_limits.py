"""Hostile and unusual slides: implausible claimed sizes refused at once, a per-slide time limit with progress, and
dark-background (fluorescence) slides kept out of check and prepare unless the study allows them."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from fedfusion.cli import main
from fedfusion.data.slides import slide_limits
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.data.slides.slide_limits import MAX_SIDE_PX, ReadBudget
from fedfusion.data.slides.slide_reader import open_slide, probe_slide
from fedfusion.data.slides.tiling import TilingParams, iter_tiles, plan_tiles
from fedfusion.data.synthetic.pyramid_tiff import write_pyramid_tiff
from fedfusion.errors import SlideError
from fedfusion.study.config import StudyConfig
from tests.study_schemas import copy_schema

STUDY = StudyConfig()
PARAMS = TilingParams.from_study(STUDY)
REFUSED_WITHIN_S = 5.0
"""The issue's bound; the refusal itself takes tens of milliseconds."""


def _claiming_tiff(path: Path, width: int, height: int, tile: int = 256) -> Path:
    """A valid tiled JPEG TIFF at 0.5 um/px claiming ``width`` x ``height`` px whose tiles are all empty (sparse)."""
    tiles = -(-width // tile) * -(-height // tile)
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        tif.write((b"" for _ in range(tiles)), shape=(height, width, 3), dtype=np.uint8, tile=(tile, tile),
                  photometric="rgb", compression="jpeg", resolution=(2e4, 2e4), resolutionunit="CENTIMETER",
                  metadata=None)
    return path


def _fluorescence_rgb() -> np.ndarray:
    """768 px of a fluorescence scan: near-black noisy background, blue (DAPI) and green (FITC) blobs."""
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(12, 6, (768, 768, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:768, :768]
    for k, colour in enumerate([(30, 60, 230), (40, 210, 60)] * 6):
        cy, cx = rng.integers(100, 668, 2)
        rgb[(yy - cy) ** 2 + (xx - cx) ** 2 < (40 + 5 * k) ** 2] = colour
    return rgb


@pytest.fixture
def site(small_cohort: Path, tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    """A copy of site-b whose only slide is its first patient's (``slide``, to be written by the test)."""
    site = tmp_path / "cohort" / "site-b"
    site.mkdir(parents=True)
    source = small_cohort / "site-b"
    for name in ("clinical.csv", "expression_tpm.csv", "copy_number.csv"):
        shutil.copy(source / name, site / name)
    copy_schema(small_cohort, site.parent)
    manifest = pd.read_csv(source / "manifest.csv", dtype=str, keep_default_na=False)
    manifest["slides"] = ""
    manifest.loc[0, "slides"] = "slides/victim.tiff"
    manifest.to_csv(site / "manifest.csv", index=False)
    (site / "slides").mkdir()
    yield site, manifest.at[0, "patient_id"], site / "slides" / "victim.tiff"


@pytest.mark.parametrize("side", [262144, 65536])
def test_slide_claiming_billions_of_pixels_is_refused_at_once(site: tuple[Path, str, Path], side: int,
                                                              tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    site_dir, patient, slide = site
    _claiming_tiff(slide, side, side)
    size = slide.stat().st_size
    assert size < 9_000_000  # 8.4 MB for 262144^2 px, 0.5 MB for 65536^2: the files of the report
    reason = (f"slide {slide}: claims {side} x {side} px in a {size} byte file, {side * side / size:.0f} px per byte; "
              "more than 1000 px per byte is implausible (blank glass is about 40): the header claims pixels the file "
              "cannot hold, so it is refused before reading")

    started = time.monotonic()
    code = main(["site", "check", str(site_dir)])
    check_s = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 1 and f"  - patient {patient}: {reason}" in out, out
    assert check_s < REFUSED_WITHIN_S, f"site check took {check_s:.1f} s"

    started = time.monotonic()
    summary = prepare_slide_features(site_dir, STUDY, cache_dir=tmp_path / "cache", device="cpu", workers=1)
    prepare_s = time.monotonic() - started
    assert [(f.patient_id, f.message) for f in summary.failures] == [(patient, reason)] and not summary.ok
    assert prepare_s < REFUSED_WITHIN_S, f"prepare took {prepare_s:.1f} s"


def test_side_limit_and_real_slides(tmp_path: Path, real_slides: Path) -> None:
    wide = _claiming_tiff(tmp_path / "wide.tiff", 2 * MAX_SIDE_PX, 256, tile=4096)
    with pytest.raises(SlideError, match=rf"^slide {wide}: claims {2 * MAX_SIDE_PX} x 256 px, more than the "
                                         rf"{MAX_SIDE_PX} px a side that any scanned glass slide has"):
        probe_slide(wide)
    cut = tmp_path / "cut.tiff"  # a real slide cut short: its header points past the end of the file
    cut.write_bytes((real_slides / "generic-tiff" / "CMU-1-Small-Region_pyramid_jpeg.tiff").read_bytes()[:3000])
    with pytest.raises(SlideError, match=rf"^slide {cut}: file is truncated or corrupt \(it starts like a TIFF, but "
                                         r"its image data runs to byte \d+ and the file has 3000 bytes\)"):
        probe_slide(cut)
    for path in sorted(real_slides.rglob("*.*")):
        if path.suffix in (".svs", ".tiff"):
            with open_slide(path) as opened:  # real scans are far inside the limits
                assert opened.dimensions[0] > 0


def test_time_limit_and_progress_lines(site: tuple[Path, str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _site_dir, _patient, slide = site
    rgb = np.full((1024, 1024, 3), 245, dtype=np.uint8)
    rgb[:, :640] = (200, 110, 170)
    write_pyramid_tiff(slide, rgb, mpp=0.5, levels=1)
    monkeypatch.setattr(slide_limits, "PROGRESS_EVERY_S", 0.0)  # a line at every read instead of every 10 s
    lines: list[str] = []
    budget = ReadBudget(slide, None, lines.append)
    plan = plan_tiles(slide, PARAMS, budget=budget)
    assert sum(1 for _ in iter_tiles(plan, budget=budget)) == len(plan.coords) == 12
    assert lines[0].startswith(f"slide {slide}: tissue mask from level 0, bands: 0 of 1 done after ")
    assert lines[-1].startswith(f"slide {slide}: tiles: 11 of 12 done after ")

    with pytest.raises(SlideError, match=rf"^slide {slide}: still reading after \d+ s \(tissue mask from level 0, "
                                         r"bands: 0 of 1 done\), over the per-slide time limit of 1e-06 s"):
        plan_tiles(slide, PARAMS, budget=ReadBudget(slide, 1e-6, lines.append))
    summary = prepare_slide_features(slide.parents[1], STUDY, cache_dir=tmp_path / "cache", device="cpu",
                                     slide_seconds=1e-6)
    assert len(summary.failures) == 1 and "over the per-slide time limit of 1e-06 s" in summary.failures[0].message
    assert main(["site", "prepare", str(slide.parents[1]), "--slide-time-limit", "-1"]) == 2


def test_fluorescence_slide_is_refused_unless_the_study_allows_it(site: tuple[Path, str, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    site_dir, patient, slide = site
    write_pyramid_tiff(slide, _fluorescence_rgb(), mpp=0.5, levels=2)
    reason = (f"slide {slide}: dark background (median grey level 12 of 255, below 80): a fluorescence or "
              "dark-field scan, not brightfield H&E; refused unless the study sets allow-non-brightfield = true")

    assert main(["site", "check", str(site_dir)]) == 1
    out = capsys.readouterr().out
    assert f"  - patient {patient}: {reason}" in out, out
    assert main(["site", "check", str(site_dir), "--allow-non-brightfield"]) == 0
    assert "FAILED" not in capsys.readouterr().out

    summary = prepare_slide_features(site_dir, STUDY, cache_dir=tmp_path / "cache", device="cpu")
    assert [f.message for f in summary.failures] == [reason]
    allowed = prepare_slide_features(site_dir, STUDY.replace(allow_non_brightfield=True),
                                     cache_dir=tmp_path / "cache", device="cpu")
    assert allowed.ok and allowed.extracted == 1 and allowed.tiles > 0
