"""Radiology volumes through `site check`, `site prepare` and the cohort loader: generated DICOM CT series
(pydicom) and NIfTI masks and volumes (nibabel), every bad-series case with its one-line message, a patient
without a scan kept and masked, and no DICOM header value in any output."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from radiology_site import header_values, radiology_study, set_tags

from fedfusion.cli import main
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import SCHEMA_FILE
from fedfusion.data.radiology.prepare import compute_volume, prepare_volume_features
from fedfusion.data.site_check import check_site
from fedfusion.errors import FeaturesNotPreparedError, VolumeError
from fedfusion.site.patient_bags import collate_full_bags
from fedfusion.study.schema import MODALITIES, RadiomicsFeature, load_schema


@pytest.fixture()
def site(radiogenomic_cohort: Path, tmp_path: Path) -> Path:
    """A writable copy of site-a, its cohort's schema beside it."""
    shutil.copy(radiogenomic_cohort / SCHEMA_FILE, tmp_path / SCHEMA_FILE)
    return Path(shutil.copytree(radiogenomic_cohort / "site-a", tmp_path / "site-a"))


def _first_scan(site: Path) -> tuple[str, Path, Path]:
    manifest = pd.read_csv(site / "manifest.csv", dtype=str, keep_default_na=False)
    row = manifest[manifest["radiology"] != ""].iloc[0]
    return row["patient_id"], site / row["radiology"], site / row["radiology_mask"]


def _errors(site: Path) -> list[str]:
    result = check_site(site, load_schema(site.parent / SCHEMA_FILE))
    return [str(f) for f in result.findings.errors]


def test_generated_site_checks_prepares_and_loads(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["site", "check", str(site)]) == 0
    schema = str(site.parent / SCHEMA_FILE)
    assert main(["site", "prepare", str(site), "--schema", schema, "--workers", "1"]) == 0
    out = capsys.readouterr().out
    scans = len(list(site.glob("radiology/*/ct")))
    assert f"site site-a: {scans} radiology volumes: 0 already cached, {scans} extracted, 0 failed" in out
    assert main(["site", "prepare", str(site), "--schema", schema, "--workers", "1"]) == 0  # all cached now
    assert "0 extracted" in capsys.readouterr().out
    study = radiology_study(site.parent)
    cohort = load_site_cohort(site, study)
    records = [*cohort.train, *cohort.test]
    assert all(r.radiology is not None and r.radiology.shape == (study.spec.radiology_dim,) for r in records)
    assert all(np.all(np.isfinite(r.radiology)) and np.abs(r.radiology).max() < 50 for r in records if r.radiology
               is not None)
    printed = out + capsys.readouterr().out + "".join(cohort.notes)
    assert not [v for v in header_values(site) if v in printed]


def test_a_patient_without_a_scan_is_kept_and_masked(site: Path) -> None:
    manifest = pd.read_csv(site / "manifest.csv", dtype=str, keep_default_na=False)
    patient = manifest.loc[0, "patient_id"]
    manifest.loc[0, ["radiology", "radiology_mask"]] = ""
    manifest.to_csv(site / "manifest.csv", index=False)
    study = radiology_study(site.parent)
    assert check_site(site, study.spec).lacking["radiology"] == [patient]
    assert prepare_volume_features(site, study).ok
    cohort = load_site_cohort(site, study)
    records = {r.patient_id: r for r in [*cohort.train, *cohort.test]}
    assert patient in records and records[patient].radiology is None
    batch = collate_full_bags(list(records.values()), study)
    flags = batch.modality_mask[:, MODALITIES.index("radiology")]
    assert flags.tolist() == [float(r.radiology is not None) for r in records.values()]
    assert "1 without radiology" in cohort.notes[-1]


def test_training_refuses_volumes_not_prepared(site: Path) -> None:
    with pytest.raises(FeaturesNotPreparedError, match=r"radiology volumes.*fedfusion site prepare .* --schema"):
        load_site_cohort(site, radiology_study(site.parent))


def test_a_nifti_volume_is_read_like_a_series(site: Path) -> None:
    patient, _, mask = _first_scan(site)
    image = nib.load(mask)
    hu = np.where(np.asarray(image.dataobj) > 0, 90, 30).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, image.affine), site / "volume.nii.gz")
    manifest = pd.read_csv(site / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[manifest["patient_id"] == patient, "radiology"] = "volume.nii.gz"
    manifest.to_csv(site / "manifest.csv", index=False)
    assert _errors(site) == []
    study = radiology_study(site.parent)
    assert prepare_volume_features(site, study).ok
    cohort = load_site_cohort(site, study)
    assert next(r for r in [*cohort.train, *cohort.test] if r.patient_id == patient).radiology is not None


def test_missing_slice(site: Path) -> None:
    patient, series, _ = _first_scan(site)
    (series / "slice-0005.dcm").unlink()
    [error] = _errors(site)
    assert error.startswith(f"patient {patient}: DICOM series {series}: missing slices between files "
                            "slice-0004.dcm and slice-0006.dcm (")
    assert "mm apart, slice spacing" in error


def test_inconsistent_spacing(site: Path) -> None:
    patient, series, _ = _first_scan(site)
    z = pydicom.dcmread(series / "slice-0005.dcm", stop_before_pixels=True).ImagePositionPatient[2]
    set_tags(series / "slice-0005.dcm", ImagePositionPatient=[0.0, 0.0, z + 0.4])
    [error] = _errors(site)
    assert error.startswith(f"patient {patient}: DICOM series {series}: inconsistent spacing: files ")


def test_inconsistent_orientation(site: Path) -> None:
    patient, series, _ = _first_scan(site)
    set_tags(series / "slice-0003.dcm", ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    assert _errors(site) == [f"patient {patient}: DICOM series {series}: inconsistent orientation: file "
                             "slice-0003.dcm differs from slice-0001.dcm"]


def test_wrong_modality(site: Path) -> None:
    patient, series, _ = _first_scan(site)
    for path in series.iterdir():
        set_tags(path, Modality="MR")
    assert _errors(site) == [f"patient {patient}: DICOM series {series}: file slice-0001.dcm has modality MR, the "
                             "study reads CT"]


def test_unreadable_file(site: Path) -> None:
    patient, series, _ = _first_scan(site)
    (series / "slice-0002.dcm").write_bytes(b"not a dicom file")
    assert _errors(site) == [f"patient {patient}: DICOM series {series}: file slice-0002.dcm is not a readable DICOM "
                             "image (InvalidDicomError)"]


def test_mask_not_aligned_with_its_volume(site: Path) -> None:
    patient, series, mask = _first_scan(site)
    image = nib.load(mask)
    shifted = image.affine.copy()
    shifted[0, 3] -= 3.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), mask)
    [error] = _errors(site)
    assert error.startswith(f"patient {patient}: mask {mask} is not aligned with its volume {series}: origin ")
    study = radiology_study(site.parent)
    summary = prepare_volume_features(site, study)
    assert not summary.ok and f"patient {patient}: mask {mask} is not aligned" in summary.report()
    with pytest.raises(VolumeError, match="not aligned"):
        load_site_cohort(site, study)
    assert prepare_volume_features(site, study, skip_bad=True).ok
    cohort = load_site_cohort(site, study, skip_bad=True)
    assert any(f"skipped volume of patient {patient}" in note for note in cohort.notes)



def test_an_mr_volume_is_z_scored_over_its_own_crop(site: Path) -> None:
    _, series, mask = _first_scan(site)
    for path in series.iterdir():
        set_tags(path, Modality="MR")
    spec = radiology_study(site.parent).spec.radiology
    assert spec is not None
    mr = replace(spec, modality="MR", window=(), features=(RadiomicsFeature("intensity:mean"),))
    whole = replace(mr, crop="volume", features=(RadiomicsFeature("intensity:mean"),))
    tumour_mean = compute_volume(series, mask, mr)[0]
    assert 0.3 < tumour_mean < 3.0  # the tumour is brighter than the rest of its crop, in that crop's sds
    assert compute_volume(series, mask, whole)[0] > tumour_mean  # z-scored over the whole volume: more background
    with pytest.raises(VolumeError, match="has modality MR, the study reads CT"):
        compute_volume(series, mask, spec)
