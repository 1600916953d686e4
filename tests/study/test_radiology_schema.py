"""The schema's [radiology] section: parsed, carried in the study JSON, validated with file and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedfusion.errors import ConfigError
from fedfusion.study.config import RADIOGENOMICS_SCHEMA_FILE, SYNTHETIC_SCHEMA_FILE, StudyConfig
from fedfusion.study.schema import StudySchema, load_schema, schema_from_toml


def _raw() -> dict:
    return tomllib.loads(RADIOGENOMICS_SCHEMA_FILE.read_text(encoding="utf-8"))


def test_radiogenomics_schema_round_trips_through_the_study_json() -> None:
    schema = load_schema(RADIOGENOMICS_SCHEMA_FILE)
    assert schema.modalities == ("omics", "clinical", "radiology")
    assert schema.radiology is not None and schema.radiology.modality == "CT"
    assert schema.radiology_dim == len(schema.radiology.features) == 12
    assert StudySchema.from_json(schema.to_json()) == schema
    assert StudyConfig(schema=schema.to_json()).with_modalities(["radiology"]).spec.radiology_dim == 12


def test_a_schema_without_radiology_keeps_its_json() -> None:
    assert '"radiology"' not in load_schema(SYNTHETIC_SCHEMA_FILE).to_json()


@pytest.mark.parametrize(("change", "message"), [
    ({"window": None}, "fixes its Hounsfield window"),
    ({"modality": "US"}, r"modality: must be one of \['CT', 'MR', 'PT'\]"),
    ({"spacing": [1.0, 0.0, 1.0]}, "spacing must be three numbers > 0"),
    ({"features": [{"name": "shape:colour"}]}, r"unknown \['shape:colour'\]"),
    ({"features": [{"name": "intensity:mean", "scale": 0.0}]}, "needs a finite center and scale > 0"),
    ({"crop": "box"}, "crop: must be one of"),
    ({"modality": "MR"}, "window applies to CT only"),
    ({"encoder": "cnn3d"}, "features apply to encoder = 'radiomics' only"),
    ({"encoder": "resnet", "features": None}, "encoder must be 'radiomics', 'cnn3d' or 'safetensors:cnn3d:"),
    ({"encoder": "cnn3d", "features": None, "input-shape": [4, 32, 32]}, "input-shape must be three voxel counts"),
])
def test_bad_radiology_sections_name_the_file_and_key(change: dict, message: str) -> None:
    raw = _raw()
    for key, value in change.items():
        if value is None:
            del raw["radiology"][key]
        else:
            raw["radiology"][key] = value
    with pytest.raises(ConfigError, match=message) as error:
        schema_from_toml(raw, Path("/x/study.toml"))
    assert "study schema /x/study.toml" in str(error.value)


def test_radiology_modality_needs_its_section() -> None:
    raw = _raw()
    del raw["radiology"]
    with pytest.raises(ConfigError, match=r"modalities has 'radiology' but no \[radiology\] section"):
        schema_from_toml(raw, Path("study.toml"))
