"""``fedfusion study feature-scaling`` on a tiny reference cohort, a site's model inputs scaled by its file, and the
site's refusal of constants computed with another tile encoder."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from safetensors.torch import save_file

from fedfusion.cli import main
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import COHORT_INDEX_FILE, SCHEMA_FILE
from fedfusion.data.reference_scaling import SYNTHETIC_REFERENCE_SEED
from fedfusion.data.slides.slide_hash_index import file_sha256
from fedfusion.data.slides.tile_encoder import SAFETENSORS_PREFIX, SmallResNetEncoder, get_tile_encoder
from fedfusion.data.synthetic import generate_cohort
from fedfusion.errors import ConfigError
from fedfusion.privacy.ledger import LEDGER_DIR_NAME
from fedfusion.site.patient_bags import collate_full_bags
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import load_schema


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny cohort of the reserved seed and the feature-scaling file the command computed from it."""
    root = generate_cohort(tmp_path_factory.mktemp("reference"), num_sites=2, seed=SYNTHETIC_REFERENCE_SEED,
                           patients_per_site=(7, 6), slide_size_px=512, workers=1)
    out = root / "scaling.json"
    assert main(["study", "feature-scaling", "--cohort", str(root), "--out", str(out), "--workers", "1"]) == 0
    return root, out


def test_the_command_writes_what_the_reference_patients_give(reference: tuple[Path, Path]) -> None:
    root, out = reference
    schema_file = root / SCHEMA_FILE
    schema_file.write_text(schema_file.read_text().replace('"synthetic_feature_scaling.json"', f'"{out.name}"'))
    scaled = StudyConfig(schema=load_schema(schema_file).to_json())
    raw = StudyConfig(schema=scaled.spec.without_feature_scaling().to_json())
    loads = {name: [load_site_cohort(root / site, study) for site in ("site-a", "site-b")]
             for name, study in (("raw", raw), ("scaled", scaled))}
    patients = {name: [p for c in cohorts for p in (*c.train, *c.test, *c.validation)]
                for name, cohorts in loads.items()}
    with_tiles = [p.tile_features.mean(axis=0) for p in patients["raw"] if p.tile_features is not None]
    wsi = scaled.spec.wsi_scaling
    assert wsi is not None and len(with_tiles) >= 10
    np.testing.assert_allclose(wsi.center, np.mean(with_tiles, axis=0), rtol=1e-4, atol=1e-7)
    expression = scaled.spec.omics[0].scaling
    assert expression is not None

    # The model's input is (x - center) / scale, for a tile feature and an omics gene.
    column, gene = 5, 17
    batches = {name: collate_full_bags(patients[name], study) for name, study in (("raw", raw), ("scaled", scaled))}
    mask = batches["raw"].tile_mask.bool()
    x, y = batches["raw"].tiles[..., column][mask], batches["scaled"].tiles[..., column][mask]
    np.testing.assert_allclose(y, (x - wsi.center[column]) / wsi.scale[column], rtol=1e-4, atol=1e-4)
    has_expression = [i for i, p in enumerate(patients["raw"]) if p.omics[0] is not None]
    x, y = (batches[name].omics[has_expression, gene] for name in ("raw", "scaled"))
    np.testing.assert_allclose(y, (x - expression.center[gene]) / expression.scale[gene], rtol=1e-4, atol=1e-4)
    assert not np.allclose(x, y)


def test_study_data_is_refused(reference: tuple[Path, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = reference
    out = tmp_path / "x.json"
    study_seed = shutil.copytree(root, tmp_path / "seed-0", ignore=shutil.ignore_patterns(".fedfusion-cache"))
    index = study_seed / COHORT_INDEX_FILE
    index.write_text(json.dumps({**json.loads(index.read_text()), "seed": 0}))
    assert main(["study", "feature-scaling", "--cohort", str(study_seed), "--out", str(out)]) != 0
    assert "a synthetic cohort of seed 0, which studies use" in capsys.readouterr().err
    site = shutil.copytree(root, tmp_path / "site", ignore=shutil.ignore_patterns(".fedfusion-cache"))
    (site / "site-b" / LEDGER_DIR_NAME).mkdir()
    assert main(["study", "feature-scaling", "--cohort", str(site), "--out", str(out)]) != 0
    assert "site-b'] hold a privacy ledger" in capsys.readouterr().err
    assert not out.exists()


def _weights_file(path: Path, seed: int) -> tuple[Path, str]:
    """A ``small-resnet-v1`` weights file (its architecture's own initialisation from ``seed``) and the study's
    ``encoder`` value naming it. Same feature count as ``random-conv-v1``, so 'tile-feature-dim' cannot tell them
    apart."""
    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in SmallResNetEncoder().state_dict().items()}, str(path))
    return path, f"{SAFETENSORS_PREFIX}{SmallResNetEncoder.name}:{file_sha256(path)}"


def _schema_naming(root: Path, scaling: Path) -> Path:
    """A copy of the cohort's schema beside it, naming ``scaling`` (a file beside it)."""
    raw = tomllib.loads((root / SCHEMA_FILE).read_text())
    raw["study"]["feature-scaling"] = scaling.name
    schema_file = root / f"study-{scaling.stem}.toml"
    schema_file.write_text(tomli_w.dumps(raw))
    return schema_file


def _study(root: Path, scaling: Path, **knobs: object) -> StudyConfig:
    """The cohort's schema naming ``scaling``, as a study with ``knobs``."""
    return StudyConfig(schema=load_schema(_schema_naming(root, scaling)).to_json(), **knobs)  # type: ignore[arg-type]


def test_the_file_names_its_encoder_and_a_site_refuses_another(reference: tuple[Path, Path], tmp_path: Path) -> None:
    root, out = reference
    default = get_tile_encoder(StudyConfig().encoder).identity()
    assert json.loads(out.read_text())["wsi"]["encoder"] == default.to_file_json()
    assert default.weights == "seed:20240601" and default.architecture == "random-conv-v1"

    # Another architecture with as many features (weights from a site's safetensors file): refused at the site,
    # naming the file, the encoder it was computed with and the one found.
    path, name = _weights_file(tmp_path / "a.safetensors", seed=1)
    with pytest.raises(ConfigError, match=r"feature-scaling file scaling.json .*computed with encoder "
                                          r"'random-conv-v1' \(random-conv-v1, 64 features, weights seed:20240601\), "
                                          rf"but the tile features here come from encoder '{name}' \(small-resnet-v1"
                                          r".*recompute the file for this encoder .*fedfusion study feature-scaling"):
        load_site_cohort(root / "site-a", _study(root, out, encoder=name), encoder_file=path)


def test_a_weights_file_is_recorded_by_its_hash(reference: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = reference
    path, name = _weights_file(tmp_path / "a.safetensors", seed=1)
    out = root / "scaling-a.json"
    assert main(["study", "feature-scaling", "--cohort", str(root), "--out", str(out), "--workers", "1",
                 "--set", f"encoder={name}", "--encoder-file", str(path)]) == 0
    recorded = json.loads(out.read_text())["wsi"]["encoder"]
    assert recorded == {"name": name, "architecture": "small-resnet-v1", "feature-dim": 64,
                        "weights": f"sha256:{file_sha256(path)}"}
    cohort = load_site_cohort(root / "site-a", _study(root, out, encoder=name), encoder_file=path)  # accepted
    assert any(p.tile_features is not None for p in cohort.train)

    # The same architecture with other weights: refused, naming both hashes.
    other_path, other_name = _weights_file(tmp_path / "b.safetensors", seed=2)
    with pytest.raises(ConfigError, match=rf"feature-scaling file scaling-a.json .*weights sha256:{file_sha256(path)}"
                                          rf".*weights sha256:{file_sha256(other_path)}"):
        load_site_cohort(root / "site-a", _study(root, out, encoder=other_name), encoder_file=other_path)


def test_a_file_without_its_encoder_is_refused(reference: tuple[Path, Path]) -> None:
    root, out = reference
    raw = json.loads(out.read_text())
    del raw["wsi"]["encoder"]
    old = root / "scaling-old.json"
    old.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"feature-scaling file .*scaling-old.json: key 'wsi' does not name the "
                                          r"tile encoder .*recompute it \(fedfusion study feature-scaling"):
        _study(root, old)
    renewed = root / "scaling-renewed.json"  # the command that recomputes it reads a schema naming the old file
    assert main(["study", "feature-scaling", "--cohort", str(root), "--out", str(renewed), "--workers", "1",
                 "--schema", str(_schema_naming(root, old))]) == 0
    assert json.loads(renewed.read_text()) == json.loads(out.read_text())
    # A study made before files recorded their encoder (its schema JSON holds none) is refused at the site too.
    schema = _study(root, out).spec
    assert schema.wsi_scaling is not None
    unnamed = dataclasses.replace(schema, wsi_scaling=dataclasses.replace(schema.wsi_scaling, encoder=None))
    with pytest.raises(ConfigError, match=r"feature-scaling file scaling.json .*computed with an encoder the file "
                                          r"does not name .*fedfusion study feature-scaling"):
        load_site_cohort(root / "site-a", StudyConfig(schema=unnamed.to_json()))
