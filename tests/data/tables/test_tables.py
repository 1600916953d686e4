"""Clinical and omics tables: validation messages, study-fixed transforms, panel harmonisation; the split rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pytest

from fedfusion.data.findings import Findings
from fedfusion.data.patient_records import ClassLabel, SurvivalLabel
from fedfusion.data.patient_split import is_test_patient
from fedfusion.data.tables.clinical import ClinicalRow, parse_clinical
from fedfusion.data.tables.manifest import ManifestEntry, parse_manifest
from fedfusion.data.tables.omics import CLIP_LOG2_RATIO, LOG2_RATIO_PER_UNIT, parse_omics_layer
from fedfusion.data.tables.panel_matrix import PanelMatrix
from fedfusion.data.tables.table_sources import TABLES_CONFIG_FILE, TableSource, resolve_table_sources
from fedfusion.errors import DataError
from fedfusion.study.config import SYNTHETIC_SCHEMA_FILE
from fedfusion.study.schema import OmicsLayer, load_schema

SCHEMA = load_schema(SYNTHETIC_SCHEMA_FILE)

HEADER = "patient_id,age,sex,survival_months,event,subtype\n"
T = TypeVar("T")


def _parsed(parse: Callable[[Findings], T]) -> tuple[T, Findings]:
    """Run a table parser as the cohort loader does: collect its findings, then raise their errors."""
    findings = Findings()
    result = parse(findings)
    findings.raise_errors()
    return result, findings


def parsed_clinical(path: Path) -> tuple[list[ClinicalRow], Findings]:
    rows, findings = _parsed(lambda findings: parse_clinical(path, findings, SCHEMA))
    return rows.rows, findings


def parsed_manifest(path: Path) -> list[ManifestEntry]:
    return _parsed(lambda findings: parse_manifest(path, findings, SCHEMA))[0]


def layer_source(path: Path, genes: Sequence[str], units: str = "tpm", name: str = "expression") -> TableSource:
    """The table ``path`` as a layer of the given panel and units."""
    layer = OmicsLayer(name=name, units=units, genes=tuple(genes), sample_column=f"{name}_sample", file=name)
    return TableSource(layer, path, units, str(path))


def parsed_expression(path: Path, gene_panel: Sequence[str], units: str = "tpm") -> PanelMatrix:
    expression = _parsed(lambda findings: parse_omics_layer(layer_source(path, gene_panel, units), findings))[0]
    assert expression is not None  # no error recorded: the table was read
    return expression


def _clinical(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "clinical.csv"
    path.write_text(HEADER + rows)
    return path


def test_clinical_vector_and_labels(tmp_path: Path) -> None:
    path = _clinical(tmp_path, "P1,70,F,12.5,1,luminal\nP2,45,m,30,0,\nP3,60,female,0,0,BASAL\n")
    rows, _findings = parsed_clinical(path)
    p1, p2, p3 = rows
    np.testing.assert_allclose(p1.covariates, [1.0, 0.0])
    np.testing.assert_allclose(p2.covariates, [-1.5, 1.0])
    assert p1.labels == (SurvivalLabel(12.5, 1), ClassLabel(2))
    assert p2.labels[1] == ClassLabel(-1) and p3.labels == (SurvivalLabel(0.0, 0), ClassLabel(0))


@pytest.mark.parametrize(("row", "patient", "problem"), [
    ("P7,50,F,soon,1,basal\n", "P7", "survival_months must be a number of months >= 0, got 'soon'"),
    ("P8,50,F,-3,1,basal\n", "P8", "survival_months must be a number of months >= 0"),
    ("P9,50,F,10,2,basal\n", "P9", "event must be 1 \\(death observed\\) or 0 \\(censored\\), got '2'"),
    ("P10,50,X,10,1,basal\n", "P10", "sex must be one of \\['M', 'male', 'F', 'female'\\], got 'X'"),
    ("P11,,F,10,1,basal\n", "P11", "age is missing \\(the schema says missing = \"refuse\"\\)"),
    ("P12,50,F,10,1,Normal-like\n", "P12", "subtype 'Normal-like' is not one of the task's classes"),
])
def test_clinical_errors_name_file_and_patient(tmp_path: Path, row: str, patient: str, problem: str) -> None:
    path = _clinical(tmp_path, "P1,70,F,12.5,1,luminal\n" + row)
    with pytest.raises(DataError, match=f"patient {patient}: {problem}") as info:
        parsed_clinical(path)
    assert str(path) in str(info.value) and "P1:" not in str(info.value)


def test_clinical_duplicates_and_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"duplicate patient ids \['P1'\]"):
        parsed_clinical(_clinical(tmp_path, "P1,70,F,12,1,basal\nP1,71,F,13,0,basal\n"))
    path = tmp_path / "short.csv"
    path.write_text("patient_id,age\nP1,50\n")
    with pytest.raises(DataError, match=r"missing columns \['sex', 'survival_months', 'event'\]"):
        parsed_clinical(path)


def test_omics_panel_harmonisation_and_orientation(tmp_path: Path) -> None:
    genes_by_samples = tmp_path / "expr.csv"
    genes_by_samples.write_text("gene_id,S1,S2\nG2,3,0\nG1,1,7\nEXTRA,5,5\n")
    expr = parsed_expression(genes_by_samples, ["G1", "G2", "G3"])
    assert expr.missing_genes == ["G3"]
    # log2(TPM + 1) = [1, 2] and [3, 0], z-scored within the sample; the missing G3 sits at the mean (0).
    np.testing.assert_allclose(expr.sample_vector("S1", "P1"), [-1.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(expr.sample_vector("S2", "P2"), [1.0, -1.0, 0.0], atol=1e-6)
    samples_by_genes = tmp_path / "expr.tsv"
    samples_by_genes.write_text("sample\tG1\tG2\tG3\nS1\t1\t3\t15\n")
    log2 = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(parsed_expression(samples_by_genes, ["G1", "G2", "G3"]).sample_vector("S1", "P1"),
                               (log2 - log2.mean()) / log2.std(), atol=1e-6)
    with pytest.raises(DataError, match="no sample column 'S9' \\(expression sample of patient P4\\)"):
        expr.sample_vector("S9", "P4")


@pytest.mark.parametrize(("cell", "problem"), [("abc", "is not a number"), ("-2", "is negative"),
                                                ("", "is not a number")])
def test_omics_bad_values_name_file_gene_sample(tmp_path: Path, cell: str, problem: str) -> None:
    path = tmp_path / "expr.csv"
    path.write_text(f"gene_id,S1,S2\nG1,1,2\nG2,3,{cell}\n")
    with pytest.raises(DataError, match=f"gene G2, sample S2: .*{problem}") as info:
        parsed_expression(path, ["G1", "G2"])
    assert str(path) in str(info.value)


def test_manifest_paths_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text("patient_id,slides,omics_sample\nP1,slides/a.svs; slides/b.svs,S1\nP2,,\n")
    p1, p2 = parsed_manifest(path)
    assert p1.slides == (tmp_path / "slides/a.svs", tmp_path / "slides/b.svs") and p1.samples == {"expression": "S1"}
    assert p2.slides == () and p2.samples == {}
    path.write_text("patient_id,slides,omics_sample\nP1,,\nP1,,\n")
    with pytest.raises(DataError, match="patient P1 is listed more than once"):
        parsed_manifest(path)


def test_split_is_per_patient_and_follows_fraction() -> None:
    ids = [f"P{i}" for i in range(4000)]
    held_out = [is_test_patient(pid, 0, 0.25) for pid in ids]
    assert 0.22 < np.mean(held_out) < 0.28
    assert held_out == [is_test_patient(pid, 0, 0.25) for pid in ids]
    assert held_out != [is_test_patient(pid, 1, 0.25) for pid in ids]
    assert all(is_test_patient(pid, 0, 0.5) for pid, out in zip(ids, held_out, strict=True) if out)


def test_expression_parquet_reads_like_csv(tmp_path: Path) -> None:
    csv = tmp_path / "expr.csv"
    csv.write_text("gene_id,S1,S2\nG2,3,0\nG1,1,7\nEXTRA,5,5\n")
    table = pd.read_csv(csv, index_col=0)
    with_index, first_column = tmp_path / "indexed.parquet", tmp_path / "plain.parquet"
    table.to_parquet(with_index)
    table.reset_index().to_parquet(first_column, index=False)
    expected = parsed_expression(csv, ["G1", "G2", "G3"]).values
    for path in (with_index, first_column):
        pd.testing.assert_frame_equal(parsed_expression(path, ["G1", "G2", "G3"]).values, expected)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(with_index.read_bytes()[:40])
    with pytest.raises(DataError, match=f"expression table {broken}: not a readable Parquet table"):
        parsed_expression(broken, ["G1"])


def test_raw_counts_are_library_size_normalised_per_sample(tmp_path: Path) -> None:
    path = tmp_path / "counts.tsv"
    path.write_text("gene_id\tS1\tS2\nG1\t10\t300\nG2\t30\t100\nEXTRA\t60\t600\n")
    expr = parsed_expression(path, ["G1", "G2"], units="counts")
    for sample, counts in (("S1", [10, 30, 60]), ("S2", [300, 100, 600])):
        log2 = np.log2(np.array(counts[:2]) / sum(counts) * 1e6 + 1.0)
        np.testing.assert_allclose(expr.sample_vector(sample, "P"), (log2 - log2.mean()) / log2.std(), atol=1e-5)
    # a deeper library of the same sample gives the same vector: only within-sample proportions count
    path.write_text("gene_id\tS1\tS2\nG1\t10\t100\nG2\t30\t300\nEXTRA\t60\t600\n")
    deeper = parsed_expression(path, ["G1", "G2"], units="counts")
    np.testing.assert_allclose(deeper.sample_vector("S1", "P"), deeper.sample_vector("S2", "P"), atol=1e-5)
    path.write_text("gene_id\tS1\tS2\nG1\t10\t0\nG2\t-3\t0\n")
    with pytest.raises(DataError, match=r"gene G2, sample S1: count -3.0 is negative.*samples \['S2'\] have no counts"):
        parsed_expression(path, ["G1", "G2"], units="counts")


def test_copy_number_layer_clips_and_fills_neutral(tmp_path: Path) -> None:
    path = tmp_path / "cn.csv"
    path.write_text("gene_id,C1,C2\nA,0.5,-4.2\nB,7,0\n")
    findings = Findings()
    layer = parse_omics_layer(layer_source(path, ["A", "B", "Z"], "log2-ratio", "copy-number"), findings)
    assert layer is not None
    assert not findings.errors and "1 panel genes missing, set to 0: ['Z']" in str(findings.warnings[0])
    unit, clip = LOG2_RATIO_PER_UNIT, CLIP_LOG2_RATIO
    np.testing.assert_allclose(layer.sample_vector("C1", "P1"), [0.5 / unit, clip / unit, 0.0])
    np.testing.assert_allclose(layer.sample_vector("C2", "P2"), [-clip / unit, 0.0, 0.0])
    with pytest.raises(DataError, match=f"copy-number table {path}: no sample column 'C9' "
                                        r"\(copy-number sample of patient P3\)"):
        layer.sample_vector("C9", "P3")
    path.write_text("gene_id,C1\nA,amp\n")
    parse_omics_layer(layer_source(path, ["A"], "log2-ratio", "copy-number"), findings)
    assert f"copy-number table {path}: gene A, sample C1: value 'amp' is not a number" in map(str, findings.errors)


def test_site_tables_config_names_files_and_units(tmp_path: Path) -> None:
    (tmp_path / "rna").mkdir()
    (tmp_path / "rna" / "counts.tsv").write_text("gene_id\tS1\nG1\t5\n")
    (tmp_path / TABLES_CONFIG_FILE).write_text('[expression]\nfile = "rna/counts.tsv"\nunits = "counts"\n'
                                               '[copy-number]\nfile = "/abs/cn.parquet"\ncolour = "red"\n')
    findings = Findings()
    sources = resolve_table_sources(tmp_path, SCHEMA, findings)
    assert sources["expression"].path == tmp_path / "rna" / "counts.tsv" and sources["expression"].units == "counts"
    assert sources["copy-number"].path == Path("/abs/cn.parquet")
    assert [str(w) for w in findings.warnings] == [
        f"site tables config {tmp_path / TABLES_CONFIG_FILE}: [copy-number] unknown keys ['colour'] are ignored"]
    (tmp_path / TABLES_CONFIG_FILE).write_text('[expression]\nunits = "fpkm"\n')
    resolve_table_sources(tmp_path, SCHEMA, findings)
    assert "[expression] units 'fpkm': the study declares 'tpm'" in str(findings.errors[-1])
    (tmp_path / TABLES_CONFIG_FILE).write_text("[expression\n")
    resolve_table_sources(tmp_path, SCHEMA, findings)
    assert "not valid TOML" in str(findings.errors[-1])
    (tmp_path / TABLES_CONFIG_FILE).unlink()
    (tmp_path / "expression_tpm.parquet").write_bytes(b"")
    defaults = resolve_table_sources(tmp_path, SCHEMA, Findings())
    assert defaults["expression"].path == tmp_path / "expression_tpm.parquet"
    assert defaults["copy-number"].path is None
