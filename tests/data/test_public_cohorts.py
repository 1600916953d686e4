"""GBSG2 written as a pooled cohort folder: the real 686 patients, a fixed split, a schema that loads."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2

from fedfusion.data.public_cohorts import fixed_split, write_gbsg2
from fedfusion.errors import ConfigError
from fedfusion.study.schema import load_schema


@pytest.fixture(scope="module")
def gbsg2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gbsg2(tmp_path_factory.mktemp("gbsg2") / "pooled")


def test_gbsg2_has_the_686_patients_and_original_columns(gbsg2: Path) -> None:
    clinical = pd.read_csv(gbsg2 / "clinical.csv")
    assert sorted(p.name for p in gbsg2.iterdir()) == ["clinical.csv", "study.toml"]
    assert len(clinical) == 686 and clinical.patient_id.is_unique
    assert list(clinical.columns) == ["patient_id", "horTh", "age", "menostat", "tsize", "tgrade", "pnodes",
                                      "progrec", "estrec", "time", "cens", "split"]
    assert clinical.patient_id.iloc[0] == "GBSG2-0001" and clinical.patient_id.iloc[-1] == "GBSG2-0686"
    original = load_gbsg2()
    pd.testing.assert_frame_equal(clinical[list(original.columns)], original, check_dtype=False)


def test_gbsg2_split_is_fixed_stratified_and_about_a_quarter(gbsg2: Path, tmp_path: Path) -> None:
    clinical = pd.read_csv(gbsg2 / "clinical.csv")
    counts = pd.crosstab(clinical.split, clinical.cens)
    assert counts.loc["test"].tolist() == [97, 75]  # round(25%) of the 387 censored and of the 299 events
    assert set(clinical.split) == {"train", "test"}
    again = write_gbsg2(tmp_path / "again")
    assert (again / "clinical.csv").read_bytes() == (gbsg2 / "clinical.csv").read_bytes()


def test_fixed_split_depends_only_on_the_ids_and_salt() -> None:
    ids = [f"P{i}" for i in range(40)]
    strata = ["a"] * 20 + ["b"] * 20
    split = fixed_split(ids, strata)
    assert split.count("test") == 10 and split[:20].count("test") == 5
    assert fixed_split(list(reversed(ids)), list(reversed(strata))) == list(reversed(split))  # not the row order
    assert fixed_split(ids, strata, salt="other") != split
    first_test = min((hashlib.sha256(f"fedfusion-gbsg2-split-v1:{p}".encode()).hexdigest(), p) for p in ids[:20])[1]
    assert split[ids.index(first_test)] == "test"


def test_gbsg2_schema_loads_with_the_declared_covariates_and_task(gbsg2: Path) -> None:
    schema = load_schema(gbsg2 / "study.toml")
    assert schema.modalities == ("clinical",) and schema.split_column == "split"
    assert [c.name for c in schema.covariates] == ["horTh", "age", "menostat", "tsize", "tgrade", "pnodes",
                                                   "progrec", "estrec"]
    assert all(c.missing == "refuse" for c in schema.covariates)
    by_name = {c.name: c for c in schema.covariates}
    assert (by_name["age"].center, by_name["age"].scale, by_name["age"].log) == (53.0, 10.0, False)
    assert by_name["tsize"].log and by_name["tsize"].center == pytest.approx(math.log(26), abs=1e-4)
    assert by_name["tgrade"].levels == ("I", "II", "III")
    assert (by_name["horTh"].positive, by_name["menostat"].positive) == (("yes",), ("Post",))
    assert all(by_name[n].log for n in ("pnodes", "progrec", "estrec"))
    (task,) = schema.tasks
    assert (task.time, task.unit, task.event, task.event_meaning) == ("time", "days", "cens", "recurrence or death")
    assert task.time_bins == (365, 730, 1095, 1460, 1825)
    clinical = pd.read_csv(gbsg2 / "clinical.csv", dtype=str)
    for covariate in schema.covariates:  # every value the data holds is one the schema accepts
        if covariate.type == "binary":
            assert set(clinical[covariate.name]) <= set(covariate.positive) | set(covariate.negative)
        elif covariate.type == "categorical":
            assert set(clinical[covariate.name]) <= set(covariate.levels)


def test_gbsg2_refuses_a_non_empty_out(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(ConfigError, match=f"output folder {tmp_path} is not empty"):
        write_gbsg2(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]
