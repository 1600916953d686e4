"""The ``fedfusion`` command.

    fedfusion synth      write a synthetic multi-hospital cohort (real slide, omics and clinical files)
    fedfusion simulate   run a federated study of several simulated sites on this machine
    fedfusion site ...   a site admin's commands: check data, prepare slide features, run the daemon, show the
                         privacy ledger and the egress record
    fedfusion provision  an operator's commands: consortium CA, coordinator certificate, site keys
    fedfusion coordinator run   the coordinator service (SuperLink on loopback + Fleet gateway)
    fedfusion study ...  prepare and submit a study to the running coordinator
    fedfusion partition  split a pooled cohort folder into one folder per site (+ a shared external test set)
    fedfusion example-cohort   write a real public cohort (GBSG2) as a pooled cohort folder
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fedfusion.cli.coordinator import register as register_coordinator
from fedfusion.cli.example_cohort import register as register_example_cohort
from fedfusion.cli.partition import register as register_partition
from fedfusion.cli.provision import register as register_provision
from fedfusion.cli.site import REGISTRARS as SITE_COMMANDS
from fedfusion.cli.study_options import add_study_options, study_from_args
from fedfusion.errors import ConfigError, FedfusionError
from fedfusion.site.node_context import DEFAULT_DEVICE

DEFAULT_COHORT_DIR = Path("cohorts/default")

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedfusion`` command; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except FedfusionError as exc:
        print(f"fedfusion: error: {exc}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedfusion",
        description="Federated multimodal (histology + omics + clinical) survival learning across hospitals, "
                    "with patient-level differential privacy.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    synth = commands.add_parser(
        "synth", help="write a synthetic multi-hospital cohort",
        description="Write, per site, the files a hospital would have: pyramidal TIFF slides, an RNA-seq TPM "
                    "table, a clinical table and a cohort manifest, with a planted risk signal (image pattern "
                    "AND expression module AND age) and the oracle risk. Writes only into a new or empty folder; "
                    "reuses an identical existing cohort.",
    )
    synth.add_argument("--out", type=Path, default=DEFAULT_COHORT_DIR,
                       help="cohort folder, new or empty (default: %(default)s)")
    synth.add_argument("--sites", type=int, default=3, help="number of hospitals (default: %(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    synth.add_argument("--patients", type=_int_list, default=None,
                       help="patients per site, comma-separated (default: differing sizes per site)")
    synth.add_argument("--radiology", action="store_true",
                       help="a radiogenomic cohort: a CT scan (DICOM series + NIfTI tumour mask) per patient instead "
                            "of a slide, and the radiology + omics + clinical study schema")
    synth.set_defaults(handler=_synth)

    simulate = commands.add_parser(
        "simulate", help="run a federated study of simulated sites on this machine",
        description="Train the fusion model in Flower's simulation engine on an existing cohort folder (only read) "
                    "or on a synthetic cohort generated into a new or empty folder, with patient-level DP-SGD at "
                    "every site. Writes metrics per round and site (CSV, JSON), a plot, the final model, the config "
                    "and the held-out patient ids per site, and prints the final model's held-out C-index. Exits 1 "
                    "when no round aggregated (the study did not train).",
    )
    simulate.add_argument("--cohort-dir", type=Path, default=DEFAULT_COHORT_DIR,
                          help="cohort folder: one sub-folder per site (with its clinical.csv, manifest.csv, ...) "
                               "and the study schema study.toml, used as it is and never written to (but the sites' "
                               "feature cache, .fedfusion-cache); a new or empty folder gets a synthetic cohort; any "
                               "other folder is refused (default: %(default)s)")
    simulate.add_argument("--sites", default=None, metavar="N|NAMES",
                          help="a new cohort: the number of synthetic sites to generate (default 3); an existing "
                               "cohort: the sites to use, comma-separated names (default: all)")
    simulate.add_argument("--results-dir", type=Path, default=None,
                          help="results folder (default: runs/<timestamp>); an interrupted study is resumed by "
                               "running the same command with the same folder")
    simulate.add_argument("--device", default=DEFAULT_DEVICE,
                          help="every simulated site's torch device: auto (the GPU when there is one), cpu, cuda:N "
                               "(default: %(default)s)")
    simulate.add_argument("--baselines", action="store_true",
                          help="also train centralized, single-modality and site-alone models and compare "
                               "them with the federated one on the same held-out patients (mean, sd, bootstrap "
                               "95%% CI; a verdict line federated vs best site alone)")
    simulate.add_argument("--seeds", type=int, default=1, metavar="N",
                          help="train the federated study (and every baseline) with N training seeds "
                               "(training-seed, +1, ...; the held-out patients stay the same) and report mean +- sd "
                               "(default: %(default)s)")
    simulate.add_argument("--central-epochs", type=int, default=None, metavar="E",
                          help="with --baselines: the most epochs the centralized models may train (default: 60); "
                               "they stop earlier when a validation split of the pooled training patients stops "
                               "improving, then train again on all of them for the chosen count")
    simulate.add_argument("--no-dp", action="store_true",
                          help="train without differential privacy (comparison); the simulated sites' policy "
                               "accepts it (a site folder's own privacy_policy.toml still applies)")
    add_study_options(simulate)
    simulate.add_argument("--verbose", action="store_true", help="show all of Flower's log, not only progress")
    simulate.set_defaults(handler=_simulate)

    site = commands.add_parser(
        "site", help="commands for a hospital's site admin",
        description="Inspect and run what happens at one hospital: its data, its privacy spend, what left it.",
    )
    site_commands = site.add_subparsers(title="site commands", required=True, metavar="SITE_COMMAND")
    for register in SITE_COMMANDS:  # one module per site command
        register(site_commands)
    register_provision(commands)
    register_coordinator(commands)
    register_partition(commands)
    register_example_cohort(commands)
    return parser


def _synth(args: argparse.Namespace) -> int:
    from fedfusion.data.synthetic import generate_cohort

    path = generate_cohort(args.out, num_sites=args.sites, seed=args.seed, patients_per_site=args.patients,
                           progress=print, radiology=args.radiology)
    print(f"cohort ready: {path}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from fedfusion.coordinator.progress_log import quiet_flower_console
    from fedfusion.data.cohort_index import SCHEMA_FILE, find_sites
    from fedfusion.simulation.cohort_folder import SiteChoice
    from fedfusion.simulation.local_study import simulate_study

    cohort_schema = args.cohort_dir / SCHEMA_FILE
    study = study_from_args(args, default_schema=cohort_schema if cohort_schema.is_file() else None,
                            **({"dp": False} if args.no_dp else {}))
    if args.schema is None and not cohort_schema.is_file() and find_sites(args.cohort_dir):
        raise ConfigError(f"cohort {args.cohort_dir} has no {SCHEMA_FILE} (the study schema: covariates, tasks, "
                          "omics panels; docs/SITE_DATA.md): put it beside the site folders or pass --schema FILE")
    sites = SiteChoice.parse(args.sites)
    if args.central_epochs is not None and not args.baselines:
        raise ConfigError("--central-epochs is the centralized baselines' training length: add --baselines")
    if not args.verbose:
        quiet_flower_console()
    results_dir = args.results_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    result = simulate_study(study, results_dir=results_dir, cohort_dir=args.cohort_dir, sites=sites,
                            device=args.device, with_baselines=args.baselines, seeds=args.seeds,
                            central_epochs=args.central_epochs)
    return 0 if result.trained else 1


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from exc
