"""The PNG a study leaves behind: C-index and epsilon per round, per site and for the federation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from fedfusion.atomic_io import atomic_write


def write_progress_plot(site_table: pd.DataFrame, round_table: pd.DataFrame, path: Path) -> None:
    """Two panels: test C-index per round (sites + pooled), cumulative epsilon per round (sites)."""
    fig, (ax_c, ax_eps) = plt.subplots(1, 2, figsize=(11, 4))
    evaluated = site_table[site_table["phase"] == "evaluate"]
    for site, rows in evaluated.groupby("site"):
        if "c-index" in rows:
            ax_c.plot(rows["round"], rows["c-index"], marker="o", alpha=0.6, label=str(site))
    pooled = round_table[round_table["phase"] == "evaluate"] if not round_table.empty else round_table
    if "pooled-c-index" in pooled:
        ax_c.plot(pooled["round"], pooled["pooled-c-index"], marker="s", color="black", lw=2.2, label="pooled")
    ax_c.axhline(0.5, color="grey", ls=":", lw=1)
    ax_c.set(title="Held-out C-index", xlabel="round", ylabel="C-index")
    ax_c.legend(fontsize=8)
    trained = site_table[site_table["phase"] == "train"]
    if "epsilon" in trained:
        for site, rows in trained.groupby("site"):
            ax_eps.plot(rows["round"], rows["epsilon"], marker="o", label=str(site))
    ax_eps.set(title="Cumulative privacy spend", xlabel="round", ylabel="epsilon")
    ax_eps.legend(fontsize=8)
    for axis in (ax_c, ax_eps):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
