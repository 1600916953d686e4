"""``fedfusion site check``: every problem of a broken site is reported in one run, with file and patient."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fedfusion.cli import main
from fedfusion.data.cohort_index import read_cohort_index
from tests.study_schemas import copy_schema

NO_MPP_SLIDE = Path("aperio/TCGA-CR-7395-01A-01-TS1.svs")


def _site(small_cohort: Path, tmp_path: Path) -> Path:
    site = tmp_path / "cohort" / "site-a"
    shutil.copytree(read_cohort_index(small_cohort).sites[0].site_dir, site,
                    ignore=shutil.ignore_patterns(".fedfusion-cache"))
    copy_schema(small_cohort, tmp_path / "cohort")
    return site


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["site", "check", *args])
    return code, capsys.readouterr().out


def test_clean_site_passes(small_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(small_cohort, tmp_path)
    code, out = _check(capsys, str(site), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and not report["errors"]
    manifest = pd.read_csv(site / "manifest.csv", dtype=str, keep_default_na=False)
    assert report["patients"] == len(manifest)
    assert report["with"]["slides"] == (manifest["slides"] != "").sum() == report["slides_checked"]
    assert report["lacking"]["expression"] == list(manifest.loc[manifest["omics_sample"] == "", "patient_id"])
    assert report["lacking"]["copy-number"] == list(manifest.loc[manifest["cnv_sample"] == "", "patient_id"])
    assert not list(site.rglob(".fedfusion-cache")), "site check must not write features"


def test_slides_coarser_than_the_target_are_named(small_cohort: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(small_cohort, tmp_path)
    code, out = _check(capsys, str(site), "--target-mpp", "0.25")
    slide = sorted((site / "slides").glob("*.tiff"))[0]
    assert code == 1
    assert (f"slide {slide}: scanned at 0.500 um/px, coarser than the study's target 0.25 um/px (tiles would "
            "have to be upsampled)") in out


def test_broken_site_lists_every_problem(small_cohort: Path, tmp_path: Path, real_slides: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(small_cohort, tmp_path)
    manifest = pd.read_csv(site / "manifest.csv", dtype=str, keep_default_na=False)
    clinical = pd.read_csv(site / "clinical.csv", dtype=str, keep_default_na=False)
    expression = pd.read_csv(site / "expression_tpm.csv", dtype=str, keep_default_na=False, index_col=0)
    with_slide = manifest.index[manifest["slides"] != ""]
    truncated_pid, no_mpp_pid = manifest.at[with_slide[0], "patient_id"], manifest.at[with_slide[1], "patient_id"]
    truncated = site / manifest.at[with_slide[0], "slides"]
    truncated.write_bytes(truncated.read_bytes()[:3000])
    shutil.copy(real_slides / NO_MPP_SLIDE, site / "slides" / "nompp.svs")
    manifest.at[with_slide[1], "slides"] = "slides/nompp.svs"
    with_omics = manifest.index[manifest["omics_sample"] != ""]
    ghost_sample_pid = manifest.at[with_omics[0], "patient_id"]
    manifest.at[with_omics[0], "omics_sample"] = "NO-SUCH-SAMPLE"
    manifest.loc[len(manifest)] = ["STRANGER", "", "", ""]
    manifest.to_csv(site / "manifest.csv", index=False)
    p0, p1, p2 = clinical["patient_id"].iloc[:3]
    clinical.loc[0, "survival_months"] = "-4"
    clinical.loc[1, "event"] = "2"
    clinical["scanner"] = "x"
    clinical.loc[len(clinical)] = clinical.iloc[2]
    clinical.to_csv(site / "clinical.csv", index=False)
    gene, sample = expression.index[5], expression.columns[1]
    expression.iat[5, 1] = "n/a"
    expression.iat[7, 2] = "-1"
    expression.drop(index=expression.index[0]).to_csv(site / "expression_tpm.csv")

    code, out = _check(capsys, str(site))
    assert code == 1
    expected = [
        f"patient {truncated_pid}: slide {truncated}: file is truncated or corrupt",
        f"patient {no_mpp_pid}: slide {site / 'slides' / 'nompp.svs'}: no microns-per-pixel metadata",
        f"no sample column 'NO-SUCH-SAMPLE' (expression sample of patient {ghost_sample_pid})",
        "patients ['STRANGER'] are in manifest.csv but have no row",
        f"clinical table {site / 'clinical.csv'}: patient {p0}: survival_months must be a number of months >= 0, "
        "got '-4'",
        f"patient {p1}: event must be 1 (death observed) or 0 (censored), got '2'",
        f"duplicate patient ids ['{p2}']",
        "unknown columns ['scanner'] are ignored",
        f"gene {gene}, sample {sample}: value 'n/a' is not a number",
        "is negative",
        "1 panel genes missing, set to 0",
        "FAILED: 9 errors, 2 warnings",
    ]
    for text in expected:
        assert text in out, f"{text!r} not in report:\n{out}"

    code, out = _check(capsys, str(site), "--fallback-mpp", "0.25", "--json")
    report = json.loads(out)
    assert code == 1 and report["slides_unreadable"] == 1 and len(report["errors"]) == 8


def test_missing_site_and_panel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(capsys, str(tmp_path / "nowhere"))
    assert code == 1 and "does not exist" in out
