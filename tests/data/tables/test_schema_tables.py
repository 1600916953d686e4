"""A real (non-synthetic) study schema drives the tables: exact encodings, labels, the split column, omics units,
and every bad input named by file, column and patient, both by the readers and by ``fedfusion site check``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fedfusion.cli import main
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.findings import Findings
from fedfusion.data.patient_records import ClassLabel, SurvivalLabel
from fedfusion.data.patient_split import PatientSplit
from fedfusion.data.tables.clinical import clinical_columns, parse_clinical
from fedfusion.data.tables.omics import parse_omics_layer
from fedfusion.data.tables.table_sources import TableSource
from fedfusion.errors import DataError
from fedfusion.privacy.site_policy import POLICY_FILE_NAME
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import OmicsLayer, StudySchema, load_schema

CLINICAL_SCHEMA = """
[study]
name = "a real cohort"
modalities = ["clinical"]
split-column = "split"

[[covariates]]
name = "psa"
type = "numeric"
log = true
center = 2.0
scale = 1.5

[[covariates]]
name = "age"
type = "numeric"
range = [20, 90]
missing = "indicator"
fill = 0.5

[[covariates]]
name = "stage"
type = "categorical"
levels = ["I", "II", "III", "other"]
other = "other"

[[covariates]]
name = "grade"
type = "categorical"
levels = ["low", "high"]
missing = "indicator"

[[covariates]]
name = "smoker"
type = "binary"
positive = ["yes", "current"]
negative = ["no", "never"]

[[tasks]]
name = "os"
type = "survival"
time = "os_days"
unit = "days"
event = "death"
event-meaning = "death"
time-bins = [365, 730, 1825]

[[tasks]]
name = "response"
type = "binary"
label = "response"
positive = ["CR", "PR"]
negative = ["SD", "PD"]
weight = 0.5

[[tasks]]
name = "histology"
type = "classification"
label = "histology"
classes = ["ductal", "lobular", "mixed"]
weight = 0.5
"""

GENES = [f"G{i:02d}" for i in range(1, 11)]
OMICS_LAYERS = "".join(f"""
[[omics]]
name = "{name}"
units = "{units}"
genes = {GENES}
""" for name, units in (("expression", "tpm"), ("rna", "counts"), ("mutations", "binary"),
                        ("methylation", "log2"), ("protein", "normalized")))
OMICS_SCHEMA = CLINICAL_SCHEMA.replace('modalities = ["clinical"]', 'modalities = ["omics", "clinical"]') + OMICS_LAYERS
MONTHS_SCHEMA = CLINICAL_SCHEMA.replace('unit = "days"', 'unit = "months"').replace("[365, 730, 1825]", "[12, 24, 60]")

COLUMNS = ["patient_id", "psa", "age", "stage", "grade", "smoker", "os_days", "death", "response", "histology", "split"]
ROWS = [
    ["P1", "9", "55", "II", "high", "yes", "400", "1", "CR", "ductal", "train"],
    ["P2", "0", "", "IV", "", "never", "1000", "0", "", "", "test"],
    ["P3", "3", "90", "i", "LOW", "Current", "", "", "PD", "mixed", "validation"],
    ["P4", "1.5", "20", "III", "low", "no", "30", "1", "PR", "Lobular", "train"],
    ["P5", "4", "70", "I", "high", "yes", "2000", "0", "SD", "ductal", "Train"],
]
PATIENTS = [row[0] for row in ROWS]


def _csv(rows: Sequence[Sequence[str]] = ROWS, drop: Sequence[str] = ()) -> str:
    keep = [i for i, c in enumerate(COLUMNS) if c not in drop]
    return "".join(",".join(line[i] for i in keep) + "\n" for line in [COLUMNS, *rows])


def _edited(*edits: tuple[str, str, str]) -> list[list[str]]:
    """ROWS with (patient, column, value) cells changed."""
    rows = [list(row) for row in ROWS]
    for patient, column, value in edits:
        rows[PATIENTS.index(patient)][COLUMNS.index(column)] = value
    return rows


def _schema(tmp_path: Path, text: str = CLINICAL_SCHEMA) -> tuple[Path, StudySchema]:
    path = tmp_path / "cohort" / "study.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path, load_schema(path)


def _table(values: np.ndarray, genes: Sequence[str] = GENES) -> str:
    """A genes x samples CSV (samples S1..Sn)."""
    header = "gene_id," + ",".join(f"S{j + 1}" for j in range(values.shape[1]))
    return "\n".join([header, *(f"{g}," + ",".join(f"{v:g}" for v in row) for g, row in zip(genes, values,
                                                                                         strict=True))]) + "\n"


def _good_omics() -> dict[str, str]:
    rng = np.random.default_rng(0)
    shape = (len(GENES), len(PATIENTS))
    return {"expression.csv": _table(np.round(rng.uniform(0, 2000, shape), 2)),
            "rna.csv": _table(rng.integers(0, 5000, shape).astype(float)),
            "mutations.csv": _table(rng.integers(0, 2, shape).astype(float)),
            "methylation.csv": _table(np.round(rng.normal(5, 2, shape), 3)),
            "protein.csv": _table(np.round(rng.normal(0, 1, shape), 3))}


def _site(tmp_path: Path, clinical: str, omics: dict[str, str] | None = None) -> Path:
    """A site folder of the cohort (clinical.csv; with ``omics``, a manifest naming S<i> for P<i> and the tables)."""
    site = tmp_path / "cohort" / "site-a"
    site.mkdir(parents=True, exist_ok=True)
    (site / "clinical.csv").write_text(clinical)
    if omics is not None:
        layers = ["expression", "rna", "mutations", "methylation", "protein"]
        header = "patient_id," + ",".join(f"{layer}_sample" for layer in layers)
        lines = [f"{pid}," + ",".join(f"S{i + 1}" for _ in layers) for i, pid in enumerate(PATIENTS)]
        (site / "manifest.csv").write_text("\n".join([header, *lines]) + "\n")
        for name, text in omics.items():
            (site / name).write_text(text)
    return site


def _parse(path: Path, schema: StudySchema) -> Findings:
    findings = Findings()
    parse_clinical(path, findings, schema)
    return findings


# ---- clinical table: encodings and labels ------------------------------------------------------

def test_clinical_rows_are_encoded_by_the_schema(tmp_path: Path) -> None:
    _path, schema = _schema(tmp_path)
    assert schema.clinical_columns == ("psa", "age", "age missing", "stage=I", "stage=II", "stage=III",
                                       "stage=other", "grade=low", "grade=high", "grade missing", "smoker")
    assert clinical_columns(schema) == (
        ("patient_id", "psa", "age", "stage", "grade", "smoker", "os_days", "death", "split"),
        ("response", "histology"))
    site = _site(tmp_path, _csv())
    findings = Findings()
    table = parse_clinical(site / "clinical.csv", findings, schema)
    assert not findings.items, findings.items
    p1, p2, p3, p4, p5 = table.rows

    def psa(x: float) -> float:  # log(x + 1), then (value - center) / scale
        return (math.log(x + 1.0) - 2.0) / 1.5

    np.testing.assert_allclose(p1.covariates, [psa(9), 0.5, 0, 0, 1, 0, 0, 0, 1, 0, 1], rtol=1e-6)
    # age missing: the fill and the indicator; stage IV: the `other` level; grade missing: zeros and indicator
    np.testing.assert_allclose(p2.covariates, [psa(0), 0.5, 1, 0, 0, 0, 1, 0, 0, 1, 0], rtol=1e-6)
    # levels and binary values match case-insensitively
    np.testing.assert_allclose(p3.covariates, [psa(3), 1.0, 0, 1, 0, 0, 0, 1, 0, 0, 1], rtol=1e-6)
    np.testing.assert_allclose(p4.covariates, [psa(1.5), 0.0, 0, 0, 0, 1, 0, 1, 0, 0, 0], rtol=1e-6)
    assert p1.covariates.dtype == np.float32 and p1.covariates.shape == (schema.clinical_dim,) == (11,)
    assert p1.labels == (SurvivalLabel(400.0, 1), ClassLabel(1), ClassLabel(0))
    assert p2.labels == (SurvivalLabel(1000.0, 0), ClassLabel(-1), ClassLabel(-1))
    assert not p3.labels[0].known and p3.labels[1:] == (ClassLabel(0), ClassLabel(2))
    assert p4.labels == (SurvivalLabel(30.0, 1), ClassLabel(1), ClassLabel(1))
    assert p5.labels == (SurvivalLabel(2000.0, 0), ClassLabel(0), ClassLabel(0))
    assert [r.split for r in table.rows] == ["train", "test", "validation", "train", "train"]


def test_optional_label_columns_may_be_absent(tmp_path: Path) -> None:
    _path, schema = _schema(tmp_path)
    rows = _edited(("P3", "os_days", "800"), ("P3", "death", "0"))  # P3 keeps a label: its survival
    site = _site(tmp_path, _csv(rows, drop=("response", "histology")))
    findings = _parse(site / "clinical.csv", schema)
    assert not findings.errors
    assert [str(w) for w in findings.warnings] == [
        f"clinical table {site / 'clinical.csv'}: no column {c}: every patient's label for it is unknown"
        for c in ("response", "histology")]


# ---- bad inputs: each named by file, column and patient ----------------------------------------

CLINICAL = "clinical table {site}/clinical.csv: "
BAD_CLINICAL = [
    ("missing-column", CLINICAL_SCHEMA, _csv(drop=("smoker",)),
     CLINICAL + "missing columns ['smoker']"),
    ("unknown-level", CLINICAL_SCHEMA, _csv(_edited(("P1", "grade", "medium"))),
     CLINICAL + "patient P1: grade level 'medium' is not one of the schema's levels ['low', 'high'] (declare it, "
                "or an `other` level)"),
    ("refused-missing", CLINICAL_SCHEMA, _csv(_edited(("P4", "psa", "NA"))),
     CLINICAL + "patient P4: psa is missing (the schema says missing = \"refuse\")"),
    ("negative-log", CLINICAL_SCHEMA, _csv(_edited(("P4", "psa", "-1"))),
     CLINICAL + "patient P4: psa must be >= 0 (it is log-transformed), got '-1'"),
    ("not-a-number", CLINICAL_SCHEMA, _csv(_edited(("P2", "age", "old"))),
     CLINICAL + "patient P2: age must be a number, got 'old'"),
    ("binary-covariate", CLINICAL_SCHEMA, _csv(_edited(("P1", "smoker", "sometimes"))),
     CLINICAL + "patient P1: smoker must be one of ['yes', 'current', 'no', 'never'], got 'sometimes'"),
    ("split-value", CLINICAL_SCHEMA, _csv(_edited(("P5", "split", "holdout"))),
     CLINICAL + "patient P5: split column split must be one of ['train', 'test', 'validation'], got 'holdout'"),
    ("days-in-months", MONTHS_SCHEMA, _csv(_edited(("P3", "os_days", "800"), ("P3", "death", "0")))
     , CLINICAL + "column os_days: median time 800 is implausible in months (over 50 years): is the column in a "
                  "finer unit? Declare its unit in the schema's task 'os'"),
    ("years-in-days", CLINICAL_SCHEMA, _csv(_edited(*((p, "os_days", "2.5") for p in PATIENTS),
                                                    ("P3", "death", "1"))),
     CLINICAL + "column os_days: median time 2.5 is implausible in days: is the column in a coarser unit?"),
    ("no-label", CLINICAL_SCHEMA, _csv(_edited(("P3", "response", ""), ("P3", "histology", ""))),
     CLINICAL + "patient P3: has no label for any task (['os', 'response', 'histology'])"),
    ("binary-task", CLINICAL_SCHEMA, _csv(_edited(("P1", "response", "NE"))),
     CLINICAL + "patient P1: response must be one of ['CR', 'PR', 'SD', 'PD'], got 'NE'"),
    ("class", CLINICAL_SCHEMA, _csv(_edited(("P1", "histology", "papillary"))),
     CLINICAL + "patient P1: histology 'papillary' is not one of the task's classes ['ductal', 'lobular', 'mixed']"),
    ("event", CLINICAL_SCHEMA, _csv(_edited(("P2", "death", ""))),
     CLINICAL + "patient P2: death must be 1 (death observed) or 0 (censored), got ''"),
]


@pytest.mark.parametrize(("schema_text", "clinical", "expected"), [case[1:] for case in BAD_CLINICAL],
                         ids=[case[0] for case in BAD_CLINICAL])
def test_bad_clinical_values_are_named(tmp_path: Path, schema_text: str, clinical: str, expected: str) -> None:
    _path, schema = _schema(tmp_path, schema_text)
    site = _site(tmp_path, clinical)
    findings = _parse(site / "clinical.csv", schema)
    assert len(findings.errors) == 1 and str(findings.errors[0]).startswith(expected.format(site=site)), findings


def test_a_level_outside_the_schema_maps_to_other_when_declared(tmp_path: Path) -> None:
    _path, schema = _schema(tmp_path)
    site = _site(tmp_path, _csv(_edited(("P1", "stage", "IVb"), ("P4", "stage", "other"))))
    findings = Findings()
    rows = parse_clinical(site / "clinical.csv", findings, schema).rows
    assert not findings.items
    stage = slice(3, 7)
    np.testing.assert_array_equal(rows[0].covariates[stage], [0, 0, 0, 1])
    np.testing.assert_array_equal(rows[3].covariates[stage], [0, 0, 0, 1])


def test_bad_site_fails_to_load_naming_file_and_patient(tmp_path: Path) -> None:
    _path, schema = _schema(tmp_path)
    site = _site(tmp_path, _csv(_edited(("P5", "split", "holdout"))))
    with pytest.raises(DataError, match="patient P5: split column split must be one of") as info:
        load_site_cohort(site, StudyConfig(schema=schema.to_json()))
    assert str(site / "clinical.csv") in str(info.value)


# ---- omics layers by their units ---------------------------------------------------------------

def _layer(tmp_path: Path, text: str, units: str, genes: Sequence[str] = GENES,
           name: str = "layer") -> tuple[Path, Findings, np.ndarray | None]:
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    layer = OmicsLayer(name=name, units=units, genes=tuple(genes), sample_column=f"{name}_sample", file=name)
    findings = Findings()
    matrix = parse_omics_layer(TableSource(layer, path, units, str(path)), findings)
    return path, findings, None if matrix is None else matrix.values.to_numpy()


def test_tpm_that_looks_logged_is_refused(tmp_path: Path) -> None:
    logged = np.round(np.random.default_rng(1).uniform(0, 15, (10, 5)), 3)  # 50 values, all below 32
    path, findings, _ = _layer(tmp_path, _table(logged), "tpm", name="expression")
    assert [str(e) for e in findings.errors] == [
        f"expression table {path}: values look already log-transformed (largest {logged.max():g}, tpm tables reach "
        "thousands): declare the layer's units as \"log2\" in the study schema"]
    # counts are checked the same way; a table with fewer than 50 values proves nothing and passes
    assert "already log-transformed" in str(_layer(tmp_path, _table(np.round(logged)), "counts")[1].errors[0])
    assert not _layer(tmp_path, _table(logged[:9], GENES[:9]), "tpm", GENES[:9])[1].errors  # 45 values
    # the same values declared as log2 are fine
    assert not _layer(tmp_path, _table(logged), "log2")[1].items


def test_counts_must_be_whole_numbers(tmp_path: Path) -> None:
    counts = np.random.default_rng(2).integers(0, 5000, (10, 5)).astype(float)
    assert not _layer(tmp_path, _table(counts), "counts")[1].items
    counts[4, 2] = 10.5
    path, findings, _ = _layer(tmp_path, _table(counts), "counts", name="rna")
    assert [str(e) for e in findings.errors] == [
        f"rna table {path}: raw counts must be whole numbers (declare units \"tpm\" or \"normalized\" for other "
        "values)"]


def test_binary_calls_are_0_or_1(tmp_path: Path) -> None:
    calls = np.array([[0, 1], [1, 1], [0, 0]], dtype=float)
    _path, findings, values = _layer(tmp_path, _table(calls, GENES[:3]), "binary", [*GENES[:3], "G99"])
    assert not findings.errors and values is not None
    np.testing.assert_array_equal(values, [[0, 1], [1, 1], [0, 0], [0, 0]])  # G99 absent: 0
    calls[1, 1] = 2
    path, findings, _ = _layer(tmp_path, _table(calls, GENES[:3]), "binary", GENES[:3], name="mutations")
    assert [str(e) for e in findings.errors] == [
        f"mutations table {path}: gene G02, sample S2: value 2.0 is not 0 or 1 (units \"binary\")"]


def test_log2_is_z_scored_within_each_sample(tmp_path: Path) -> None:
    values = np.array([[1.0, 10.0], [2.0, 10.0], [6.0, 13.0]])
    _path, findings, out = _layer(tmp_path, _table(values, GENES[:3]), "log2", [*GENES[:3], "G99"])
    assert not findings.errors and out is not None
    for j in range(2):
        column = values[:, j]
        np.testing.assert_allclose(out[:3, j], (column - column.mean()) / column.std(), rtol=1e-6)
    np.testing.assert_array_equal(out[3], [0, 0])  # an absent panel gene sits at the sample's mean
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-6)


def test_normalized_is_used_as_given(tmp_path: Path) -> None:
    values = np.array([[0.3, -7.0], [-1.25, 120.5], [5.0, 0.0]])
    _path, findings, out = _layer(tmp_path, _table(values, GENES[:3]), "normalized", [GENES[2], GENES[0], "G99"])
    assert not findings.errors and out is not None
    np.testing.assert_allclose(out, [[5.0, 0.0], [0.3, -7.0], [0.0, 0.0]], rtol=1e-6)  # panel order; G99 is 0


# ---- fedfusion site check ----------------------------------------------------------------------

def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["site", "check", *args])
    return code, capsys.readouterr().out


BAD_OMICS = [
    ("logged-tpm", "expression.csv", _table(np.full((10, 5), 7.5)),
     "expression table {site}/expression.csv: values look already log-transformed (largest 7.5, tpm tables reach "
     "thousands): declare the layer's units as \"log2\" in the study schema"),
    ("fractional-counts", "rna.csv", _table(np.full((10, 5), 12.25) + np.arange(50).reshape(10, 5)),
     "rna table {site}/rna.csv: raw counts must be whole numbers"),
    ("binary-2", "mutations.csv", _table(np.eye(10, 5) * 2),
     "mutations table {site}/mutations.csv: gene G01, sample S1: value 2.0 is not 0 or 1 (units \"binary\")"),
    ("duplicate-sample", "expression.csv",  # an extra column named S2: pandas alone would read it as "S2.1"
     _table(np.round(np.random.default_rng(1).uniform(0, 2000, (10, 6)), 2)).replace(",S6\n", ",S2\n"),
     "expression table {site}/expression.csv: duplicate sample ids ['S2']: each sample must be one column"),
]


@pytest.mark.parametrize(("schema_text", "clinical", "bad_file", "bad_table", "expected"),
                         [(s, c, None, None, e) for _, s, c, e in BAD_CLINICAL]
                         + [(OMICS_SCHEMA, _csv(), f, t, e) for _, f, t, e in BAD_OMICS],
                         ids=[case[0] for case in BAD_CLINICAL] + [case[0] for case in BAD_OMICS])
def test_site_check_reports_each_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], schema_text: str,
                                           clinical: str, bad_file: str | None, bad_table: str | None,
                                           expected: str) -> None:
    schema_file = _schema(tmp_path, schema_text)[0]
    omics = None
    if bad_file is not None:
        omics = _good_omics()
        omics[bad_file] = str(bad_table)
    site = _site(tmp_path, clinical, omics)
    code, out = _check(capsys, str(site), "--schema", str(schema_file))
    assert code == 1, out
    assert f"  - {expected.format(site=site)}" in out, out
    assert "\nFAILED: " in out


def test_clinical_only_study_checks_and_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema_file, schema = _schema(tmp_path)
    site = _site(tmp_path, _csv())
    assert not (site / "manifest.csv").exists()
    code, out = _check(capsys, str(site), "--schema", str(schema_file))
    assert code == 0, out
    assert out.splitlines()[:3] == [f"site {site}: 5 patients", "  with clinical 5",
                                    "  slides: 0 checked, 0 unusable"]
    assert out.splitlines()[-1] == "OK: 0 errors, 1 warnings"  # 1 held-out patient: too few to evaluate
    assert "5 usable patients, 3 for training and 1 held out: fewer than 20 held out" in out
    assert _check(capsys, str(site)) == (0, out)  # the cohort's study.toml beside the site folder is the default
    cohort = load_site_cohort(site, StudyConfig(schema=schema.to_json()))
    assert [r.patient_id for r in cohort.train] == ["P1", "P4", "P5"]
    assert [r.patient_id for r in cohort.test] == ["P2"] and [r.patient_id for r in cohort.validation] == ["P3"]
    p1 = cohort.train[0]
    assert p1.tile_features is None and p1.omics == ()
    assert p1.clinical.shape == (11,) and p1.labels == (SurvivalLabel(400.0, 1), ClassLabel(1), ClassLabel(0))
    assert "5 patients (3 train, 1 test, 1 validation; fixed split column)" in cohort.notes[-1]
    # The site's policy decides whether the column applies; the coordinator's seed and fraction never move it.
    moved = StudyConfig(schema=schema.to_json(), seed=9, test_fraction=0.9)
    assert [r.patient_id for r in load_site_cohort(site, moved, split=PatientSplit(0, 0.25)).test] == ["P2"]
    own = load_site_cohort(site, moved, split=PatientSplit(0, 0.5, use_split_column=False))
    assert [r.patient_id for r in own.test] == [p for p in ("P1", "P2", "P3", "P4", "P5")
                                                if PatientSplit(0, 0.5).is_test(p)] and not own.validation


def test_omics_study_checks_and_loads_every_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema_file, schema = _schema(tmp_path, OMICS_SCHEMA)
    omics = _good_omics()
    site = _site(tmp_path, _csv(), omics)
    code, out = _check(capsys, str(site), "--schema", str(schema_file))
    assert code == 0, out
    assert ("  with expression 5, rna 5, mutations 5, methylation 5, protein 5, clinical 5" in out
            and out.endswith("OK: 0 errors, 1 warnings\n"))
    cohort = load_site_cohort(site, StudyConfig(schema=schema.to_json()))
    p2 = cohort.test[0]
    assert p2.patient_id == "P2" and len(p2.omics) == 5 and all(v is not None and v.shape == (10,) for v in p2.omics)
    protein = np.loadtxt((site / "protein.csv").read_text().splitlines()[1:], delimiter=",",
                         converters={0: lambda _gene: 0.0})[:, 1:]
    np.testing.assert_allclose(p2.omics[4], protein[:, 1], rtol=1e-6)  # normalized: P2's sample S2 as given


@pytest.mark.parametrize(("rows", "expected"), [
    ([], "0 usable patients, 0 for training and 0 held out: a site needs at least 2 training patients to train"),
    (ROWS[:1], "1 usable patients, 1 for training and 0 held out: a site needs at least 2 training patients"),
    ([ROWS[1], ROWS[0]], "2 usable patients, 1 for training and 1 held out: a site needs at least 2 training"),
], ids=["no patient", "one patient", "one training patient"])
def test_site_check_refuses_a_site_too_small_to_train(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      rows: list[list[str]], expected: str) -> None:
    schema_file = _schema(tmp_path)[0]
    site = _site(tmp_path, _csv(rows))
    code, out = _check(capsys, str(site), "--schema", str(schema_file))
    assert code == 1 and f"  - site {site.name}: {expected}" in out, out


def test_site_check_counts_patients_by_the_sites_own_policy(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The site's privacy policy beside its data, not the default study, decides the split and the minimum."""
    schema_file = _schema(tmp_path)[0]
    site = _site(tmp_path, _csv())
    (site / POLICY_FILE_NAME).write_text("split-seed = 3\ntest-fraction = 0.6\nuse-split-column = false\n"
                                         "min-eval-patients = 5\n")
    split = PatientSplit(seed=3, test_fraction=0.6, use_split_column=False)
    held_out = sum(split.is_test(row[0]) for row in ROWS)
    assert 0 < held_out < 4  # the hash rule holds some of the five out, and leaves at least two to train
    code, out = _check(capsys, str(site), "--schema", str(schema_file))
    assert code == 0, out
    assert f"5 usable patients, {5 - held_out} for training and {held_out} held out: fewer than 5 held out" in out
