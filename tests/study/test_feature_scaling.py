"""Study-fixed input scaling: the schema's feature-scaling file, its errors, its place in the study's JSON, the
shipped synthetic constants, and the site's records scaled by it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from fedfusion.data.slides.tile_encoder import get_tile_encoder
from fedfusion.errors import ConfigError
from fedfusion.study.config import SYNTHETIC_SCHEMA_FILE, StudyConfig
from fedfusion.study.feature_scaling import ColumnScaling, EncoderIdentity, TileScaling
from fedfusion.study.identity import derived_study_id
from fedfusion.study.schema import StudySchema, feature_scaling_file, load_schema

SCHEMA: dict[str, Any] = {
    "study": {"modalities": ["wsi", "omics"], "feature-scaling": "scaling.json"},
    "tasks": [{"name": "os", "type": "survival", "time": "t", "unit": "days", "event": "e", "time-bins": [365]}],
    "omics": [{"name": "expression", "units": "tpm", "genes": ["G1", "G2", "G3"]},
              {"name": "cnv", "units": "log2-ratio", "genes": ["G1", "G2"]}],
}
SCALING: dict[str, Any] = {
    "reference": "a test",
    "wsi": {"center": [0.5, 0.25], "scale": [0.1, 2.0],
            "encoder": {"name": "tiny", "architecture": "tiny-arch", "feature-dim": 2, "weights": "seed:7"}},
    "omics": {"expression": {"genes": ["G1", "G2", "G3"], "center": [1.0, 0.0, -1.0], "scale": [0.5, 1.0, 4.0]}},
}


def _schema(tmp_path: Path, scaling: dict[str, Any] | str) -> Path:
    (tmp_path / "scaling.json").write_text(scaling if isinstance(scaling, str) else json.dumps(scaling))
    path = tmp_path / "study.toml"
    path.write_text(tomli_w.dumps(SCHEMA))
    return path


def test_the_file_is_read_into_the_schema_and_its_json(tmp_path: Path) -> None:
    schema = load_schema(_schema(tmp_path, SCALING))
    assert schema.wsi_scaling == TileScaling(center=(0.5, 0.25), scale=(0.1, 2.0), file="scaling.json",
                                             encoder=EncoderIdentity("tiny", "tiny-arch", 2, "seed:7"))
    expression, cnv = schema.omics
    assert expression.scaling == ColumnScaling(center=(1.0, 0.0, -1.0), scale=(0.5, 1.0, 4.0))
    assert cnv.scaling is None  # a layer the file leaves out is used as transformed
    assert StudySchema.from_json(schema.to_json()) == schema
    values = np.array([[0.6, 0.25], [0.5, 4.25]], dtype=np.float32)
    np.testing.assert_allclose(schema.wsi_scaling.apply(values), [[1.0, 0.0], [0.0, 2.0]], rtol=1e-6)
    with pytest.raises(ConfigError, match="'wsi' has 2 columns but study config 'tile-feature-dim' is 64"):
        StudyConfig(schema=schema.to_json())


def test_a_schema_without_scaling_keeps_its_json_and_study_id(tmp_path: Path) -> None:
    scaled = load_schema(_schema(tmp_path, SCALING))
    plain = scaled.without_feature_scaling()
    text = plain.to_json()
    assert "scaling" not in text  # the JSON (so the study id) of a schema without scaling is what it always was
    assert plain.wsi_scaling is None and all(layer.scaling is None for layer in plain.omics)
    assert StudySchema.from_json(text) == plain and text != scaled.to_json()


@pytest.mark.parametrize(("scaling", "message"), [
    ("{not json", "scaling.json: not readable JSON"),
    ({"wsi": {"center": [0.0, 0.0], "scale": [1.0, 0.0]}}, "key 'wsi': every center must be finite and every scale"),
    ({"wsi": {"center": [0.0], "scale": [1.0, 1.0]}}, "key 'wsi': center and scale must be non-empty and of one"),
    ({"wsi": {"center": [0.0], "scale": ["1"]}}, r"key 'wsi'.scale: must be a list of numbers"),
    ({"omics": {"methylation": {"center": [0.0], "scale": [1.0]}}}, "key 'omics.methylation': the schema has no"),
    ({"omics": {"expression": {"center": [0.0], "scale": [1.0]}}}, "key 'omics.expression': 1 columns, but the"),
    ({"omics": {"expression": {"genes": ["G1", "G3", "G2"], "center": [0.0] * 3, "scale": [1.0] * 3}}},
     "key 'omics.expression': 'genes' is not the layer's panel"),
    ({"wsi": {"center": [0.0]}}, "key 'wsi': must be an object with 'center' and 'scale'"),
    ({"scales": {}}, r"unknown keys \['scales'\]"),
    ({"wsi": {"center": [0.0, 0.0], "scale": [1.0, 1.0]}},
     r"key 'wsi' does not name the tile encoder .* recompute it \(fedfusion study feature-scaling"),
    ({"wsi": {"center": [0.0, 0.0], "scale": [1.0, 1.0], "encoder": {"name": "tiny"}}},
     "key 'wsi.encoder': must be an object with exactly 'name'"),
    ({"wsi": {**SCALING["wsi"], "encoder": {**SCALING["wsi"]["encoder"], "feature-dim": 3}}},
     "key 'wsi': 2 tile-feature columns, but the encoder they were computed with"),
])
def test_errors_name_the_schema_the_file_and_the_key(tmp_path: Path, scaling: dict[str, Any] | str,
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_schema(_schema(tmp_path, scaling))
    assert f"study schema {tmp_path / 'study.toml'}: [study] feature-scaling" in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(tomli_w.dumps(SCHEMA))
    with pytest.raises(ConfigError, match=r"\[study\] feature-scaling: feature-scaling file .*scaling.json: file "
                                          "does not exist"):
        load_schema(path)


def test_the_synthetic_schema_ships_finite_constants_of_the_reserved_seed() -> None:
    schema = load_schema(SYNTHETIC_SCHEMA_FILE)
    file = feature_scaling_file(SYNTHETIC_SCHEMA_FILE)
    assert file is not None and "--seed 9001" in json.loads(file.read_text())["reference"]
    assert schema.wsi_scaling is not None and schema.wsi_scaling.width == StudyConfig().tile_feature_dim
    for layer in schema.omics:
        assert layer.scaling is not None and layer.scaling.width == layer.width
    for scaling in (schema.wsi_scaling, *(layer.scaling for layer in schema.omics if layer.scaling)):
        assert np.isfinite(scaling.center).all() and (np.asarray(scaling.scale) > 0).all()
    assert StudyConfig().spec == schema  # the default study uses them
    assert schema.wsi_scaling.encoder == get_tile_encoder(StudyConfig().encoder).identity()  # its encoder's


def test_the_encoder_is_part_of_the_study_id() -> None:
    study = StudyConfig()
    scaling = study.spec.wsi_scaling
    assert scaling is not None and scaling.encoder is not None
    other = dataclasses.replace(scaling, encoder=dataclasses.replace(scaling.encoder, weights="seed:1"))
    changed = study.replace(schema=dataclasses.replace(study.spec, wsi_scaling=other).to_json())
    assert changed.spec.wsi_scaling == other and derived_study_id(changed) != derived_study_id(study)
