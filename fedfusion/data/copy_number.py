"""Copy number per gene: read a site's copy-number table and put each sample on the study's copy-number panel.

The table is genes x samples (or samples x genes), CSV, TSV or Parquet, like the expression table. Values are
log2 copy-number ratios (tumour vs. normal; 0 = two copies), as segment means mapped to genes or GISTIC-style
calls on the same scale. They are already comparable between samples, so the only transform is a clip to
``[-CLIP_LOG2, CLIP_LOG2]`` (deep deletions and focal amplifications would otherwise dominate the network);
panel genes the table lacks are 0 (neutral) and reported. A per-sample transform: no site statistic is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedfusion.data.findings import Findings
from fedfusion.data.panel_matrix import PanelMatrix, read_numeric_panel_table

CLIP_LOG2 = 3.0
SAMPLE_KIND = "copy-number sample"


def parse_copy_number(path: Path, cnv_panel: Sequence[str], findings: Findings) -> PanelMatrix | None:
    """The table on the copy-number panel, or None if it cannot be read; every problem goes into ``findings``."""
    where = f"copy-number table {path}"
    read = read_numeric_panel_table(path, where, cnv_panel, findings)
    if read is None:
        return None
    numeric, missing = read
    values = numeric.reindex(list(cnv_panel)).clip(-CLIP_LOG2, CLIP_LOG2).fillna(0.0).astype(np.float32)
    return PanelMatrix(path=path, where=where, sample_kind=SAMPLE_KIND, values=values, missing_genes=missing)
