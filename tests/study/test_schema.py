"""The study schema (TOML): loading, every validation error naming the file and the key, canonical JSON, identity."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fedfusion.cli import main
from fedfusion.errors import ConfigError
from fedfusion.study.config import SYNTHETIC_SCHEMA_FILE, StudyConfig
from fedfusion.study.flower_app import write_flower_app
from fedfusion.study.identity import derived_study_id
from fedfusion.study.run_config import StudyRun
from fedfusion.study.schema import StudySchema, load_schema

BASE: dict[str, Any] = {
    "study": {"name": "test cohort", "modalities": ["omics", "clinical"]},
    "covariates": [
        {"name": "age", "type": "numeric", "center": 60.0, "scale": 10.0},
        {"name": "stage", "type": "categorical", "levels": ["I", "II", "III"], "other": "III"},
        {"name": "smoker", "type": "binary", "positive": ["yes"], "negative": ["no"]},
    ],
    "tasks": [
        {"name": "os", "type": "survival", "time": "os_days", "unit": "days", "event": "death",
         "time-bins": [365, 730]},
        {"name": "subtype", "type": "classification", "label": "subtype", "classes": ["a", "b"]},
    ],
    "omics": [{"name": "expression", "units": "tpm", "genes": ["G1", "G2"]}],
}


def _write(tmp_path: Path, raw: dict[str, Any], name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(tomli_w.dumps(raw))
    return path


def _base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def test_synthetic_schema_loads() -> None:
    schema = load_schema(SYNTHETIC_SCHEMA_FILE)
    assert schema.modalities == ("wsi", "omics", "clinical")
    assert [c.name for c in schema.covariates] == ["age", "sex"] and schema.clinical_dim == 2
    survival, subtype = schema.tasks
    assert (survival.time, survival.unit, survival.event, survival.event_meaning) == (
        "survival_months", "months", "event", "death")
    assert survival.time_bins == (12.0, 24.0, 36.0, 60.0) and survival.num_outputs == 5
    assert subtype.classes == ("basal", "her2", "luminal") and subtype.weight == 0.5
    expression, copy_number = schema.omics
    assert (expression.units, expression.width, expression.sample_column, expression.file) == (
        "tpm", 200, "omics_sample", "expression_tpm")
    assert (copy_number.units, copy_number.width, copy_number.sample_column) == ("log2-ratio", 40, "cnv_sample")
    assert schema.omics_input_dim == 200 + 40 + 2 and schema.primary_task is survival
    assert schema.split_column == ""


def test_study_defaults_prints_the_synthetic_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "defaults", "--schema"]) == 0
    printed = tmp_path / "printed.toml"
    printed.write_text(capsys.readouterr().out)
    assert load_schema(printed) == load_schema(SYNTHETIC_SCHEMA_FILE)


def test_base_schema_loads_with_defaults(tmp_path: Path) -> None:
    schema = load_schema(_write(tmp_path, _base()))
    layer = schema.omics[0]
    assert (layer.sample_column, layer.file) == ("expression_sample", "expression")
    assert schema.tasks[0].event_meaning == "event" and schema.tasks[1].weight == 1.0
    assert schema.covariates[0].missing == "refuse"
    assert schema.clinical_columns == ("age", "stage=I", "stage=II", "stage=III", "smoker")


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """``raw[a][i][b] = value`` for ``dotted`` = "a.i.b" (``value`` None deletes the key; a list index one past
    the end appends)."""
    *parents, last = dotted.split(".")
    node: Any = raw
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is None:
        del node[key]
    elif isinstance(node, list) and key == len(node):
        node.append(value)
    else:
        node[key] = value


@pytest.mark.parametrize(("changes", "key", "problem"), [
    ({"colour": "red"}, "colour", r"unknown keys \['colour'\]"),
    ({"study.split_column": "x"}, "split_column", r"\[study\]: unknown keys \['split_column'\]"),
    ({"covariates.0.unit": "years"}, "unit", r"covariates\[0\] \('age'\): unknown keys \['unit'\]"),
    ({"tasks.0.bins": [1]}, "bins", r"tasks\[0\] \('os'\): unknown keys \['bins'\]"),
    ({"omics.0.gene-panel": "p.txt"}, "gene-panel", r"omics\[0\] \('expression'\): unknown keys \['gene-panel'\]"),
    ({"covariates.1.center": 1.0}, "center", r"covariates\[1\] \('stage'\): keys \['center'\] do not apply to a "
                                              "categorical covariate"),
    ({"tasks.1.unit": "days"}, "unit", r"tasks\[1\] \('subtype'\): keys \['unit'\] do not apply to a "
                                        "classification task"),
    ({"tasks.0.unit": None}, "unit", r"tasks\[0\] \('os'\): missing key 'unit'"),
    ({"tasks.0.time-bins": None}, "time-bins", r"tasks\[0\] \('os'\): missing key 'time-bins'"),
    ({"covariates.0.scale": None}, "scale", r"covariates\[0\] \('age'\): missing key 'scale'"),
    ({"covariates.1.levels": None}, "levels", r"covariates\[1\] \('stage'\): missing key 'levels'"),
    ({"covariates.2.positive": None}, "positive", r"covariates\[2\] \('smoker'\): missing key 'positive'"),
    ({"tasks.1.classes": None}, "classes", r"tasks\[1\] \('subtype'\): missing key 'classes'"),
    ({"omics.0.name": None}, "name", r"omics\[0\]: missing key 'name'"),
    ({"omics.0.name": None, "omics.0.nmae": "x"}, "nmae", r"omics\[0\]: unknown keys \['nmae'\]"),
    ({"covariates.0.center": "60"}, "center", r"covariates\[0\] \('age'\) center: must be a finite number, "
                                              "got '60'"),
    ({"tasks.0.weight": "1"}, "weight", r"tasks\[0\] \('os'\) weight: must be a finite number"),
    ({"tasks.0.time-bins": [365, "730"]}, "time-bins", r"tasks\[0\] \('os'\) time-bins: must be a finite number"),
    ({"covariates.0.log": "yes"}, "log", r"covariates\[0\] \('age'\) log: must be true or false"),
    ({"covariates.1.levels": "I"}, "levels", r"covariates\[1\] \('stage'\) levels: must be a list of strings"),
    ({"tasks.0.time": 3}, "time", r"tasks\[0\] \('os'\) time: must be a string"),
    ({"covariates": {"name": "age"}}, "covariates", r"covariates: must be an array of tables"),
    ({"covariates.0.type": "ordinal"}, "type", r"covariates\[0\] \('age'\) type: must be one of "),
    ({"tasks.0.type": "regression"}, "type", r"tasks\[0\] \('os'\) type: must be one of "),
    ({"covariates.0.missing": "impute"}, "missing", r"covariates\[0\] \('age'\) missing: must be one of "),
    ({"covariates.0.scale": 0}, "scale", r"covariate 'age': center must be finite and scale > 0, got center "
                                         r"60.0, scale 0.0"),
    ({"covariates.0.scale": -2.0}, "scale", r"covariate 'age': center must be finite and scale > 0"),
    ({"covariates.0.center": None, "covariates.0.scale": None, "covariates.0.range": [90, 20]}, "range",
     r"covariates\[0\] \('age'\) range: must be \[low, high\] with high > low, got \[90.0, 20.0\]"),
    ({"covariates.0.center": None, "covariates.0.scale": None, "covariates.0.range": [20, 20]}, "range",
     r"range: must be \[low, high\] with high > low"),
    ({"covariates.0.center": None, "covariates.0.scale": None, "covariates.0.range": [20]}, "range",
     r"range: must be a list of 2 numbers"),
    ({"covariates.0.scale": None, "covariates.0.range": [20, 90]}, "range",
     r"covariates\[0\] \('age'\): give either range or center/scale, not both"),
    ({"covariates.1.levels": ["I", "II", "I"]}, "levels",
     r"covariate 'stage': levels must be a non-empty list without duplicates, got \['I', 'II', 'I'\]"),
    ({"covariates.1.levels": []}, "levels", r"covariate 'stage': levels must be a non-empty list"),
    ({"covariates.1.other": "IV"}, "other", r"covariate 'stage': other = 'IV' must be one of its levels"),
    ({"covariates.2.negative": ["YES", "unknown"]}, "negative",
     r"covariate 'smoker': positive and negative must be non-empty and disjoint"),
    ({"tasks.0.time-bins": [730, 365]}, "time-bins",
     r"task 'os': time-bins must be positive and strictly increasing \(in days\), got \[730.0, 365.0\]"),
    ({"tasks.0.time-bins": [365, 365]}, "time-bins", r"task 'os': time-bins must be positive and strictly"),
    ({"tasks.0.time-bins": [0, 365]}, "time-bins", r"task 'os': time-bins must be positive and strictly"),
    ({"tasks.0.time-bins": [-30, 365]}, "time-bins", r"task 'os': time-bins must be positive and strictly"),
    ({"tasks.0.time-bins": []}, "time-bins", r"task 'os': time-bins must be positive and strictly"),
    ({"tasks.0.unit": "weeks"}, "unit", r"tasks\[0\] \('os'\) unit: must be one of \['days', 'months', 'years'\], "
                                        "got 'weeks'"),
    ({"tasks.0.event": "os_days"}, "event", r"task 'os': unit must be one of .* time and event distinct columns"),
    ({"tasks.0.weight": 0}, "weight", r"task 'os': weight must be a number > 0, got 0.0"),
    ({"tasks.1.classes": ["a"]}, "classes", r"task 'subtype': classes must list at least two distinct classes .*, "
                                            r"got \['a'\]"),
    ({"tasks.1.classes": ["a", "a"]}, "classes", r"task 'subtype': classes must list at least two distinct"),
    ({"tasks.1.classes": ["a", "b", "A"]}, "classes", r"task 'subtype': classes must list at least two distinct "
                                                      r"classes \(labels are read case-insensitively\)"),
    ({"tasks.1": {"name": "resp", "type": "binary", "label": "r", "positive": ["CR", "PR"],
                  "negative": ["pr", "PD"]}}, "negative", r"task 'resp': positive and negative values overlap"),
    ({"omics.0.panel": "panel.txt"}, "panel",
     r"omics\[0\] \('expression'\): give the gene panel as genes = \[...\] or panel = \"file\", exactly one"),
    ({"omics.0.genes": None}, "genes", r"omics\[0\] \('expression'\): give the gene panel as genes"),
    ({"omics.0.genes": None, "omics.0.panel": "panels/absent.txt"}, "panel",
     r"omics\[0\] \('expression'\) panel: gene panel .*absent.txt: cannot be read \(FileNotFoundError\)"),
    ({"omics.0.genes": None, "omics.0.panel": ""}, "panel",
     r"omics\[0\] \('expression'\) panel: gene panel .*: cannot be read \(IsADirectoryError\)"),
    ({"omics.0.genes": None, "omics.0.panel": 7}, "panel", r"omics\[0\] \('expression'\) panel: must be a string"),
    ({"omics.0.genes": ["G1", "G2", "G1"]}, "genes",
     r"omics layer 'expression' gene panel is empty or has duplicate genes \['G1'\]"),
    ({"omics.0.genes": []}, "genes", r"omics layer 'expression' gene panel is empty"),
    ({"omics.0.units": "fpkm"}, "units", r"omics\[0\] \('expression'\) units: must be one of \['tpm', 'counts', "
                                         r"'log2', 'normalized', 'binary', 'log2-ratio'\], got 'fpkm'"),
    ({"study.modalities": ["xray", "clinical"]}, "modalities",
     r"\[study\] modalities must name some of \['wsi', 'omics', 'clinical', 'radiology'\], got \['xray', 'clinical'\]"),
    ({"study.modalities": []}, "modalities", r"\[study\] modalities must name some of"),
    ({"study.modalities": "clinical"}, "modalities", r"\[study\] modalities: must be a list of strings"),
    ({"covariates": []}, "covariates", r"\[study\] modalities has 'clinical' but no \[\[covariates\]\] are declared"),
    ({"omics": []}, "omics", r"\[study\] modalities has 'omics' but no \[\[omics\]\] layers are declared"),
    ({"covariates.2.name": "age"}, "covariates", r"duplicate covariates names \['age'\]"),
    ({"tasks.1.name": "os"}, "tasks", r"duplicate tasks names \['os'\]"),
    ({"omics.1": {"name": "expression", "genes": ["G3"]}}, "omics", r"duplicate omics names \['expression'\]"),
    ({"omics.1": {"name": "methylation", "genes": ["G3"], "sample-column": "expression_sample"}}, "sample-column",
     r"duplicate omics sample-column names \['expression_sample'\]"),
    ({"covariates.2.name": "subtype"}, "subtype",
     r"covariates \['subtype'\] are also label columns \(the model would see the labels\)"),
    ({"covariates.0.name": "os_days"}, "os_days", r"covariates \['os_days'\] are also label columns"),
    ({"tasks": []}, "tasks", r"declares no \[\[tasks\]\] \(at least one endpoint\)"),
    ({"study.split-column": "death"}, "split-column", r"\[study\] split-column 'death' is also a label column"),
    ({"study.split-column": "subtype"}, "split-column", r"\[study\] split-column 'subtype' is also a label column"),
    ({"study.split-column": "patient_id"}, "split-column", r"split-column 'patient_id' is also a label column"),
])
def test_schema_errors_name_the_file_and_the_key(tmp_path: Path, changes: dict[str, Any], key: str,
                                                 problem: str) -> None:
    raw = _base()
    for dotted, value in changes.items():
        _set(raw, dotted, value)
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError, match=problem) as info:
        load_schema(path)
    message = str(info.value)
    assert message.startswith(f"study schema {path}: "), message
    assert key in message, f"{key!r} not named in: {message}"


def test_file_problems_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"study schema {tmp_path / 'none.toml'}: file does not exist"):
        load_schema(tmp_path / "none.toml")
    path = tmp_path / "bad.toml"
    path.write_text("[study\nname = 1\n")
    with pytest.raises(ConfigError, match=f"study schema {path}: not valid TOML"):
        load_schema(path)


def test_json_round_trip(tmp_path: Path) -> None:
    raw = _base()
    raw["study"]["split-column"] = "split"
    raw["covariates"][0]["missing"] = "indicator"
    raw["covariates"][0]["fill"] = 0.25
    raw["tasks"].append({"name": "resp", "type": "binary", "label": "r", "positive": ["CR", "PR"],
                         "negative": "PD", "weight": 0.5})
    schema = load_schema(_write(tmp_path, raw))
    text = schema.to_json()
    assert StudySchema.from_json(text) == schema and StudySchema.from_json(text).to_json() == text
    assert " " not in text.replace("test cohort", "")  # canonical: no spaces between tokens
    resp = schema.tasks[2]
    assert (resp.positive, resp.negative, resp.classes, resp.num_outputs) == (("CR", "PR"), ("PD",), ("PD", "CR"), 2)
    synthetic = load_schema(SYNTHETIC_SCHEMA_FILE)
    assert StudySchema.from_json(synthetic.to_json()) == synthetic
    with pytest.raises(ConfigError, match="study config 'schema': not a study schema"):
        StudySchema.from_json('{"modalities": ["clinical"]}')


def test_panel_file_is_read_beside_the_schema_and_embedded(tmp_path: Path) -> None:
    (tmp_path / "panels").mkdir()
    (tmp_path / "panels" / "rna.txt").write_text("BRCA1\n\n  TP53 \nERBB2\n")
    raw = _base()
    del raw["omics"][0]["genes"]
    raw["omics"][0]["panel"] = "panels/rna.txt"
    schema = load_schema(_write(tmp_path, raw))
    assert schema.omics[0].genes == ("BRCA1", "TP53", "ERBB2")
    (tmp_path / "panels" / "rna.txt").unlink()
    text = schema.to_json()
    assert '"genes":["BRCA1","TP53","ERBB2"]' in text and "rna.txt" not in text
    assert StudySchema.from_json(text).omics[0].genes == ("BRCA1", "TP53", "ERBB2")


def test_range_sets_center_and_scale(tmp_path: Path) -> None:
    raw = _base()
    raw["covariates"][0] = {"name": "age", "type": "numeric", "range": [20, 90], "log": True}
    age = load_schema(_write(tmp_path, raw)).covariates[0]
    assert (age.center, age.scale, age.log) == (20.0, 70.0, True)


def test_default_modalities_follow_what_is_declared(tmp_path: Path) -> None:
    raw = _base()
    del raw["study"]["modalities"]
    assert load_schema(_write(tmp_path, raw)).modalities == ("omics", "clinical")
    raw["omics"] = []
    assert load_schema(_write(tmp_path, raw)).modalities == ("clinical",)


def test_schema_is_part_of_the_study_id_and_the_app(tmp_path: Path) -> None:
    schema = load_schema(_write(tmp_path, _base()))
    default, custom = StudyConfig(), StudyConfig(schema=schema.to_json())
    assert custom.spec == schema and custom.modalities == "omics,clinical"
    assert derived_study_id(custom) != derived_study_id(default)
    raw = _base()
    raw["tasks"][0]["time-bins"] = [365, 1095]
    other = StudyConfig(schema=load_schema(_write(tmp_path, raw, "other.toml")).to_json())
    assert derived_study_id(other) != derived_study_id(custom)
    assert derived_study_id(StudyConfig(schema=schema.to_json())) == derived_study_id(custom)
    run = StudyRun.of(custom)
    assert run.study_id == derived_study_id(custom)
    app = tomllib.loads((write_flower_app(run, tmp_path / "app") / "pyproject.toml").read_text())
    config = app["tool"]["flwr"]["app"]["config"]
    assert config["schema"] == schema.to_json() and config["study-id"] == derived_study_id(custom)
    assert StudyRun.from_run_config(config).study.spec == schema
