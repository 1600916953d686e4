"""Clinical and omics tables: validation messages, study-fixed transforms, panel harmonisation; the split rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedfusion.data.clinical import read_clinical, subtype_index
from fedfusion.data.manifest import read_manifest
from fedfusion.data.omics import read_expression
from fedfusion.data.patient_split import is_test_patient
from fedfusion.errors import DataError

HEADER = "patient_id,age,sex,survival_months,event,subtype\n"


def _clinical(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "clinical.csv"
    path.write_text(HEADER + rows)
    return path


def test_clinical_vector_and_labels(tmp_path: Path) -> None:
    table = read_clinical(_clinical(tmp_path, "P1,70,F,12.5,1,luminal\nP2,45,m,30,0,\nP3,60,F,3,0,Normal-like\n"))
    p1, p2, p3 = table.rows
    np.testing.assert_allclose(p1.covariates, [1.0, 0.0])
    np.testing.assert_allclose(p2.covariates, [-1.5, 1.0])
    assert (p1.time_months, p1.event, p1.subtype) == (12.5, 1, 2)
    assert (p2.subtype, p3.subtype) == (-1, -1)
    assert any("Normal-like" in note for note in table.notes)
    assert subtype_index("BASAL", ["luminal", "her2", "basal"]) == 0


@pytest.mark.parametrize(("row", "patient", "problem"), [
    ("P7,50,F,0,1,basal\n", "P7", "survival_months must be a number > 0"),
    ("P8,50,F,-3,1,basal\n", "P8", "survival_months must be a number > 0"),
    ("P9,50,F,10,2,basal\n", "P9", "event must be 0 \\(censored\\) or 1"),
    ("P10,50,X,10,1,basal\n", "P10", "sex must be F or M"),
    ("P11,,F,10,1,basal\n", "P11", "age must be"),
])
def test_clinical_errors_name_file_and_patient(tmp_path: Path, row: str, patient: str, problem: str) -> None:
    path = _clinical(tmp_path, "P1,70,F,12.5,1,luminal\n" + row)
    with pytest.raises(DataError, match=f"patient {patient}: {problem}") as info:
        read_clinical(path)
    assert str(path) in str(info.value) and "P1:" not in str(info.value)


def test_clinical_duplicates_and_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"duplicate patient ids \['P1'\]"):
        read_clinical(_clinical(tmp_path, "P1,70,F,12,1,basal\nP1,71,F,13,0,basal\n"))
    path = tmp_path / "short.csv"
    path.write_text("patient_id,age\nP1,50\n")
    with pytest.raises(DataError, match=r"missing columns \['sex', 'survival_months', 'event'\]"):
        read_clinical(path)


def test_omics_panel_harmonisation_and_orientation(tmp_path: Path) -> None:
    genes_by_samples = tmp_path / "expr.csv"
    genes_by_samples.write_text("gene_id,S1,S2\nG2,3,0\nG1,1,7\nEXTRA,5,5\n")
    expr = read_expression(genes_by_samples, ["G1", "G2", "G3"])
    assert expr.missing_genes == ["G3"]
    # log2(TPM + 1) = [1, 2] and [3, 0], z-scored within the sample; the missing G3 sits at the mean (0).
    np.testing.assert_allclose(expr.sample_vector("S1", "P1"), [-1.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(expr.sample_vector("S2", "P2"), [1.0, -1.0, 0.0], atol=1e-6)
    samples_by_genes = tmp_path / "expr.tsv"
    samples_by_genes.write_text("sample\tG1\tG2\tG3\nS1\t1\t3\t15\n")
    log2 = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(read_expression(samples_by_genes, ["G1", "G2", "G3"]).sample_vector("S1", "P1"),
                               (log2 - log2.mean()) / log2.std(), atol=1e-6)
    with pytest.raises(DataError, match="no sample column 'S9' \\(omics sample of patient P4\\)"):
        expr.sample_vector("S9", "P4")


@pytest.mark.parametrize(("cell", "problem"), [("abc", "is not a number"), ("-2", "is negative"),
                                                ("", "is not a number")])
def test_omics_bad_values_name_file_gene_sample(tmp_path: Path, cell: str, problem: str) -> None:
    path = tmp_path / "expr.csv"
    path.write_text(f"gene_id,S1,S2\nG1,1,2\nG2,3,{cell}\n")
    with pytest.raises(DataError, match=f"gene G2, sample S2: .*{problem}") as info:
        read_expression(path, ["G1", "G2"])
    assert str(path) in str(info.value)


def test_manifest_paths_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text("patient_id,slides,omics_sample\nP1,slides/a.svs; slides/b.svs,S1\nP2,,\n")
    p1, p2 = read_manifest(path)
    assert p1.slides == (tmp_path / "slides/a.svs", tmp_path / "slides/b.svs") and p1.omics_sample == "S1"
    assert p2.slides == () and p2.omics_sample is None
    path.write_text("patient_id,slides,omics_sample\nP1,,\nP1,,\n")
    with pytest.raises(DataError, match="patient P1 is listed more than once"):
        read_manifest(path)


def test_split_is_per_patient_and_follows_fraction() -> None:
    ids = [f"P{i}" for i in range(4000)]
    held_out = [is_test_patient(pid, 0, 0.25) for pid in ids]
    assert 0.22 < np.mean(held_out) < 0.28
    assert held_out == [is_test_patient(pid, 0, 0.25) for pid in ids]
    assert held_out != [is_test_patient(pid, 1, 0.25) for pid in ids]
    assert all(is_test_patient(pid, 0, 0.5) for pid, out in zip(ids, held_out) if out)
