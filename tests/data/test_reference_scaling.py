"""``fedfusion study feature-scaling`` on a tiny reference cohort, and a site's model inputs scaled by its file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedfusion.cli import main
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import COHORT_INDEX_FILE, SCHEMA_FILE
from fedfusion.data.reference_scaling import SYNTHETIC_REFERENCE_SEED
from fedfusion.data.synthetic import generate_cohort
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
