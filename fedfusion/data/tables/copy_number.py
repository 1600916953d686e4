"""Copy number per gene: read a site's copy-number table and put each sample on the study's copy-number panel.

The table is genes x samples (or samples x genes), CSV, TSV or Parquet, like the expression table. Values are
log2 copy-number ratios (tumour vs. normal; 0 = two copies), as segment means mapped to genes or GISTIC-style
calls on the same scale. They are already comparable between samples, so the transform is study-fixed: a clip
to ``[-CLIP_LOG2, CLIP_LOG2]`` (deep deletions and focal amplifications would otherwise dominate the network),
then a division by ``LOG2_PER_UNIT`` so that a one-copy change is about one unit, the scale of the RNA-seq
z-scores it is fed with (DP-SGD adds the same noise to every weight, so a feature on a smaller scale would get a
worse signal-to-noise ratio). Panel genes the table lacks are 0 (neutral) and reported. No site statistic is
used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedfusion.data.findings import Findings
from fedfusion.data.tables.panel_matrix import PanelMatrix, read_numeric_panel_table

CLIP_LOG2 = 2.0
LOG2_PER_UNIT = 0.5
"""About a one-copy change: a single-copy gain of a diploid tumour is log2(3/2) = 0.58, a loss log2(1/2) = -1."""
SAMPLE_KIND = "copy-number sample"


def parse_copy_number(path: Path, cnv_panel: Sequence[str], findings: Findings) -> PanelMatrix | None:
    """The table on the copy-number panel, or None if it cannot be read; every problem goes into ``findings``."""
    where = f"copy-number table {path}"
    read = read_numeric_panel_table(path, where, cnv_panel, findings)
    if read is None:
        return None
    numeric, missing = read
    clipped = numeric.reindex(list(cnv_panel)).clip(-CLIP_LOG2, CLIP_LOG2).fillna(0.0)
    values = (clipped / LOG2_PER_UNIT).astype(np.float32)
    return PanelMatrix(path=path, where=where, sample_kind=SAMPLE_KIND, values=values, missing_genes=missing)
