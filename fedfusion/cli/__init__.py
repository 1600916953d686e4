"""The ``fedfusion`` command.

    fedfusion synth      write a synthetic multi-hospital cohort (real slide, omics and clinical files)
    fedfusion simulate   run a federated study of several simulated sites on this machine
    fedfusion site ...   a site admin's commands: check data, prepare slide features, run the daemon, show the
                         privacy ledger and the egress record
    fedfusion provision  an operator's commands: consortium CA, coordinator certificate, site keys
    fedfusion coordinator run   the coordinator service (SuperLink on loopback + Fleet gateway)
    fedfusion study ...  prepare and submit a study to the running coordinator
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fedfusion.cli.coordinator import register as register_coordinator
from fedfusion.cli.provision import register as register_provision
from fedfusion.cli.site import REGISTRARS as SITE_COMMANDS
from fedfusion.cli.study_options import add_study_options, study_from_args
from fedfusion.errors import FedfusionError
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
                    "AND expression module AND age) and the oracle risk. Reuses an identical existing cohort.",
    )
    synth.add_argument("--out", type=Path, default=DEFAULT_COHORT_DIR, help="cohort folder (default: %(default)s)")
    synth.add_argument("--sites", type=int, default=3, help="number of hospitals (default: %(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    synth.add_argument("--patients", type=_int_list, default=None,
                       help="patients per site, comma-separated (default: differing sizes per site)")
    synth.set_defaults(handler=_synth)

    simulate = commands.add_parser(
        "simulate", help="run a federated study of simulated sites on this machine",
        description="Generate (or reuse) a synthetic cohort, extract tile features per site, and train the "
                    "fusion model in Flower's simulation engine with patient-level DP-SGD at every site. "
                    "Writes metrics per round and site (CSV, JSON), a plot, the final model and the config.",
    )
    simulate.add_argument("--cohort-dir", type=Path, default=DEFAULT_COHORT_DIR,
                          help="cohort folder (a cohort.json and one folder per site); a missing or empty folder "
                               "gets a synthetic cohort (default: %(default)s)")
    simulate.add_argument("--sites", type=int, default=3, help="number of simulated sites (default: %(default)s)")
    simulate.add_argument("--results-dir", type=Path, default=None,
                          help="results folder (default: runs/<timestamp>); an interrupted study is resumed by "
                               "running the same command with the same folder")
    simulate.add_argument("--device", default=DEFAULT_DEVICE,
                          help="every simulated site's torch device: auto (the GPU when there is one), cpu, cuda:N "
                               "(default: %(default)s)")
    simulate.add_argument("--baselines", action="store_true",
                          help="also train centralized, single-modality and site-alone models and compare "
                               "them with the federated one on the same held-out patients")
    simulate.add_argument("--no-dp", action="store_true", help="train without differential privacy (comparison)")
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
    return parser


def _synth(args: argparse.Namespace) -> int:
    from fedfusion.data.synthetic import generate_cohort

    path = generate_cohort(args.out, num_sites=args.sites, seed=args.seed, patients_per_site=args.patients,
                           progress=print)
    print(f"cohort ready: {path}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from fedfusion.coordinator.progress_log import quiet_flower_console
    from fedfusion.simulation.local_study import simulate_study

    if not args.verbose:
        quiet_flower_console()

    study = study_from_args(args, **({"dp": False} if args.no_dp else {}))
    results_dir = args.results_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    simulate_study(study, num_sites=args.sites, results_dir=results_dir, cohort_dir=args.cohort_dir,
                   device=args.device, with_baselines=args.baselines)
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from exc
