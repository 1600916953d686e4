"""``fedfusion example-cohort NAME --out DIR``: write a real public cohort as a pooled cohort folder.

    fedfusion example-cohort gbsg2 --out cohorts/gbsg2
    fedfusion partition cohorts/gbsg2 --out cohorts/gbsg2-sites --random 4 --stratify cens --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedfusion.data.public_cohorts import PUBLIC_COHORTS


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``example-cohort`` command."""
    parser = commands.add_parser(
        "example-cohort", help="write a real public cohort (GBSG2) as a pooled cohort folder",
        description="Write a public cohort shipped with an installed package (nothing is downloaded) as a "
                    "pooled cohort folder: clinical.csv with patient ids and a fixed train/test split column, "
                    "and study.toml. gbsg2: German Breast Cancer Study Group 2, 686 node-positive breast cancer "
                    "patients, recurrence-free survival (from lifelines). Split it into sites with "
                    "`fedfusion partition`.",
    )
    parser.add_argument("name", choices=sorted(PUBLIC_COHORTS), metavar="NAME",
                        help=f"the cohort: {', '.join(sorted(PUBLIC_COHORTS))}")
    parser.add_argument("--out", type=Path, required=True, help="output folder: must be missing or empty")
    parser.set_defaults(handler=_example_cohort)


def _example_cohort(args: argparse.Namespace) -> int:
    out = PUBLIC_COHORTS[args.name](args.out)
    print(f"{args.name} cohort written: {out} (clinical.csv, study.toml); "
          f"split it with `fedfusion partition {out} --out DIR ...`")
    return 0
