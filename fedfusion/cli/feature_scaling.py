"""``fedfusion study feature-scaling --cohort DIR --out FILE``: a study's input scaling from a reference cohort.

    fedfusion synth --seed 9001 --out cohorts/reference
    fedfusion study feature-scaling --cohort cohorts/reference --out feature_scaling.json

Each site of the reference cohort is prepared (slide features into its own cache) and read with the schema's inputs
unscaled; the file holds each tile feature's and each omics gene's centre and scale over the reference's patients
(``fedfusion.data.reference_scaling``) and the identity of the tile encoder the tile features came from
(``--set encoder=...``, its weights from ``--encoder-file``), which a site checks before it applies them. The
schema names it (``[study] feature-scaling``). The reference must not be the study's patients (docs/SITE_DATA.md):
the command refuses a synthetic cohort of another seed than the reserved one and a folder with a site that holds a
privacy ledger (a study's site).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.cli.study_options import parse_key_value
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import COHORT_INDEX_FILE, SCHEMA_FILE, find_sites, read_cohort_index
from fedfusion.data.reference_scaling import SYNTHETIC_REFERENCE_SEED, reference_scaling
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.data.slides.tile_encoder import get_tile_encoder
from fedfusion.errors import ConfigError, DataError
from fedfusion.privacy.ledger import LEDGER_DIR_NAME
from fedfusion.study.config import StudyConfig
from fedfusion.study.feature_scaling import feature_scaling_json
from fedfusion.study.schema import load_schema


def register(study_actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``study feature-scaling``."""
    parser = study_actions.add_parser(
        "feature-scaling", help="compute the study-fixed input scaling from a reference cohort",
        description="Write the per-column centre and scale of the tile features and of each omics layer, over "
                    "the patients of a REFERENCE cohort (public data, or `fedfusion synth --seed "
                    f"{SYNTHETIC_REFERENCE_SEED}` for the synthetic study), never the study's own sites: name the "
                    "file in the schema's [study] feature-scaling.")
    parser.add_argument("--cohort", type=Path, required=True, help="the reference cohort folder (site sub-folders)")
    parser.add_argument("--out", type=Path, required=True, help="the feature-scaling file to write (JSON)")
    parser.add_argument("--schema", type=Path, default=None, metavar="FILE",
                        help="the study schema (default: the cohort's study.toml); its own scaling is ignored")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a study config key that shapes the features (encoder, tile-size, ...); repeatable")
    parser.add_argument("--encoder-file", type=Path, default=None, metavar="FILE",
                        help="the weights file of a 'safetensors:' or 'torchscript:' encoder (--set encoder=...)")
    parser.add_argument("--device", default="cpu", help="where slide features are extracted (default: cpu)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="slides extracted in parallel (default: the CPU count, %(default)s)")
    parser.set_defaults(handler=_feature_scaling)


def _feature_scaling(args: argparse.Namespace) -> int:
    root = args.cohort.resolve()
    sites = find_sites(root)
    if not sites:
        raise ConfigError(f"--cohort {root}: holds no site folder (a sub-folder with clinical.csv)")
    _refuse_study_data(root, [site.site_dir for site in sites])
    schema_file = args.schema or root / SCHEMA_FILE
    schema = load_schema(schema_file, feature_scaling=False)
    overrides = dict(parse_key_value(item) for item in args.overrides)
    study = StudyConfig.from_run_config({**StudyConfig().to_run_config(), **overrides, "schema": schema.to_json()})
    records = []
    for site in sites:
        if "wsi" in schema.modalities:
            summary = prepare_slide_features(site.site_dir, study, device=args.device, workers=args.workers,
                                             encoder_file=args.encoder_file, progress=print)
            if not summary.ok:
                raise DataError(summary.report())
        cohort = load_site_cohort(site.site_dir, study, encoder_file=args.encoder_file)
        records += [*cohort.train, *cohort.test, *cohort.validation]
    wsi, omics = reference_scaling(records, schema)
    reference = _describe(root, len(records))
    tiles = None
    if wsi is not None:  # the encoder the tile features came from (as loaded above, so its file already checked)
        tiles = (wsi, get_tile_encoder(study.encoder, encoder_file=args.encoder_file).identity())
    atomic_write_text(args.out, feature_scaling_json(reference, tiles, omics))
    print(f"wrote {args.out}: {reference}; "
          + ", ".join([*([f"wsi {wsi.width} columns"] if wsi else []),
                       *(f"{name} {len(genes)} genes" for name, (genes, _) in omics.items())]))
    return 0


def _refuse_study_data(root: Path, site_dirs: list[Path]) -> None:
    """A synthetic cohort of a study seed, or a site that has taken part in a study, is not a reference."""
    if (root / COHORT_INDEX_FILE).is_file():
        seed = read_cohort_index(root).seed
        if seed != SYNTHETIC_REFERENCE_SEED:
            raise ConfigError(f"--cohort {root}: a synthetic cohort of seed {seed}, which studies use; the reference "
                              f"is `fedfusion synth --seed {SYNTHETIC_REFERENCE_SEED}` (the scaling must not come "
                              "from a study's patients: docs/SITE_DATA.md)")
    ledgers = [str(d) for d in site_dirs if (d / LEDGER_DIR_NAME).exists()]
    if ledgers:
        raise ConfigError(f"--cohort {root}: sites {ledgers} hold a privacy ledger, so they are a study's sites; "
                          "the scaling must come from a reference cohort outside the study (docs/SITE_DATA.md)")


def _describe(root: Path, patients: int) -> str:
    if (root / COHORT_INDEX_FILE).is_file():
        return f"synthetic cohort `fedfusion synth --seed {read_cohort_index(root).seed}`, {patients} patients"
    return f"reference cohort {root.name}, {patients} patients"
