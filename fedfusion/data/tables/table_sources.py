"""Where a site's omics tables are and in which units: the schema's default file names, or the site's ``tables.toml``.

Without ``tables.toml`` each schema omics layer's table is the first of ``<file>.csv``, ``.tsv``, ``.csv.gz``,
``.tsv.gz``, ``.parquet`` present in the site folder (``file`` from the schema). A site whose files are named
otherwise, or whose expression is raw counts where the study declares TPM, says so (one section per layer name)::

    [expression]
    file = "rnaseq/star_counts.parquet"   # relative to the site folder, or absolute
    units = "counts"                      # only between "tpm" and "counts"; other units are the study's

    [copy-number]
    file = "cnv/gene_log2_ratios.tsv"

Problems (not TOML, unknown units) are recorded as findings naming the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from fedfusion.data.findings import Findings
from fedfusion.study.schema import OmicsLayer, StudySchema

TABLES_CONFIG_FILE = "tables.toml"
TABLE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet")
SITE_UNIT_CHOICES = ("tpm", "counts")
"""Units a site may declare for its own table of a layer the study declares in one of these units."""
LAYER_KEYS = ("file", "units")


@dataclass(frozen=True)
class TableSource:
    """One omics layer's table at a site: its file (None when there is none) and units."""

    layer: OmicsLayer
    path: Path | None
    units: str
    looked_for: str
    """Where it was looked for, for messages when it is absent."""


def resolve_table_sources(site_dir: Path, schema: StudySchema, findings: Findings) -> dict[str, TableSource]:
    """Each schema omics layer's table at the site, by layer name (``tables.toml`` where it names them)."""
    where = f"site tables config {site_dir / TABLES_CONFIG_FILE}"
    config = _read_config(site_dir / TABLES_CONFIG_FILE, schema, findings)
    sources: dict[str, TableSource] = {}
    for layer in schema.omics:
        section = config.get(layer.name, {})
        units = str(section.get("units", layer.units)).lower()
        if units != layer.units and not {units, layer.units} <= set(SITE_UNIT_CHOICES):
            findings.error(where, f"[{layer.name}] units {units!r}: the study declares {layer.units!r}; a site may "
                                  f"only choose between {list(SITE_UNIT_CHOICES)} for a layer in one of them")
            units = layer.units
        defaults = tuple(f"{layer.file}{suffix}" for suffix in TABLE_SUFFIXES)
        named = section.get("file")
        if named is not None:
            path = site_dir / str(named)  # an absolute path stays absolute
            sources[layer.name] = TableSource(layer, path, units, str(path))
        else:
            found = next((site_dir / n for n in defaults if (site_dir / n).is_file()), None)
            sources[layer.name] = TableSource(layer, found, units, f"{list(defaults)} in {site_dir}")
    return sources


def _read_config(path: Path, schema: StudySchema, findings: Findings) -> dict[str, dict[str, object]]:
    """The parsed ``tables.toml`` ({} when absent); unknown sections or keys are warnings, bad TOML an error."""
    where = f"site tables config {path}"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        findings.error(where, f"not valid TOML ({exc})")
        return {}
    layers = [layer.name for layer in schema.omics]
    config: dict[str, dict[str, object]] = {}
    for section, body in raw.items():
        if section not in layers or not isinstance(body, dict):
            findings.warning(where, f"unknown section [{section}] is ignored (the study's omics layers: {layers})")
            continue
        unknown = sorted(set(body) - set(LAYER_KEYS))
        if unknown:
            findings.warning(where, f"[{section}] unknown keys {unknown} are ignored")
        config[section] = body
    return config
