"""The radiology branch of the fusion and linear models: its own encoder, and masked when a patient has no scan."""

from __future__ import annotations

import pytest
import torch

from fedfusion.models.fusion_model import build_model
from fedfusion.study.config import RADIOGENOMICS_SCHEMA_FILE, StudyConfig
from fedfusion.study.schema import MODALITIES, load_schema

STUDY = StudyConfig(schema=load_schema(RADIOGENOMICS_SCHEMA_FILE).to_json(), hidden_dim=8, dropout=0.0)


def _inputs(batch: int, radiology_present: float) -> list[torch.Tensor]:
    spec = STUDY.spec
    mask = torch.ones(batch, len(MODALITIES))
    mask[:, MODALITIES.index("wsi")] = 0.0
    mask[:, MODALITIES.index("radiology")] = radiology_present
    return [torch.zeros(batch, 1, STUDY.tile_feature_dim), torch.zeros(batch, 1, dtype=torch.bool),
            torch.randn(batch, spec.omics_input_dim), mask, torch.randn(batch, spec.clinical_dim),
            torch.randn(batch, spec.radiology_dim)]


@pytest.mark.parametrize("model", ["fusion", "linear"])
def test_radiology_moves_the_output_only_when_present(model: str) -> None:
    net = build_model(STUDY.replace(model=model), seed=0).eval()
    if model == "linear":
        for parameter in net.parameters():
            torch.nn.init.normal_(parameter)
    else:
        assert "encoders.radiology.layers.0.weight" in net.state_dict()
    for present, moves in ((1.0, True), (0.0, False)):
        inputs = _inputs(4, present)
        other = [*inputs[:5], inputs[5] + 3.0]
        with torch.no_grad():
            changed = not torch.allclose(net(*inputs)[0], net(*other)[0])
        assert changed == moves
