"""``fedfusion partition``: split a pooled cohort folder into one folder per site (``fedfusion.data.partition``).

    fedfusion partition POOLED_DIR --out DIR --by-column institution
    fedfusion partition POOLED_DIR --out DIR --by-pattern '^TCGA-(\\w\\w)-' --mapping tss_sites.csv
    fedfusion partition POOLED_DIR --out DIR --random 4 --seed 0 --stratify cens
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedfusion.data.partition import DEFAULT_MIN_PATIENTS, REPORT_FILE, SMALL_SITE_RULES, partition_cohort
from fedfusion.data.partition_rules import ByColumn, ByPattern, PartitionRule, RandomSplit, rule_mode
from fedfusion.errors import ConfigError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``partition`` command."""
    parser = commands.add_parser(
        "partition", help="split a pooled cohort folder into one folder per site",
        description="Read a pooled cohort folder (site layout plus study.toml) and write one site folder per "
                    "site into --out (missing or empty): clinical rows, manifest (slide paths still pointing at "
                    "the pooled slides, which are not copied) and omics samples of its patients, a copy of "
                    "study.toml, and partition.json. Sites below --min-patients go to external-test/ or are "
                    "dropped. The pooled folder is only read. See docs/SITE_DATA.md.",
    )
    parser.add_argument("pooled_dir", type=Path, metavar="POOLED_DIR", help="the pooled cohort folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder: must be missing or empty")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--by-column", metavar="COL",
                      help="a clinical.csv column: each distinct value is a site (name sanitised to [A-Za-z0-9_-])")
    mode.add_argument("--by-pattern", metavar="REGEX",
                      help="a regular expression searched in the patient id; its first group (or the whole match) "
                           "is looked up in --mapping")
    mode.add_argument("--random", type=int, metavar="N", help="a seeded random split into N sites")
    parser.add_argument("--mapping", type=Path, metavar="FILE",
                        help="with --by-pattern: a two-column CSV 'code,site' (header optional)")
    parser.add_argument("--unmapped", choices=("error", "drop"), default="error",
                        help="with --by-pattern: an id that does not match or has no site is an error, or is "
                             "dropped with a note (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="with --random: the seed (default: 0)")
    parser.add_argument("--stratify", metavar="COL",
                        help="with --random: a clinical.csv column whose values are spread evenly over the sites "
                             "(e.g. the event column); an empty value is a stratum of its own")
    parser.add_argument("--sizes", type=_fractions, metavar="P1,P2,...",
                        help="with --random: relative site sizes, one per site (normalised); default equal")
    parser.add_argument("--min-patients", type=int, default=DEFAULT_MIN_PATIENTS, metavar="M",
                        help="sites with fewer patients are not sites (default: %(default)s)")
    parser.add_argument("--small-sites", choices=SMALL_SITE_RULES, default=SMALL_SITE_RULES[0],
                        help="where the patients of sites below --min-patients go (default: %(default)s)")
    parser.add_argument("--schema", type=Path, default=None, metavar="FILE",
                        help="the study schema (default: POOLED_DIR/study.toml)")
    parser.set_defaults(handler=_partition)


def rule_from_args(args: argparse.Namespace) -> PartitionRule:
    """The partition rule the options name; ``ConfigError`` for an option given with the wrong mode."""
    if args.by_pattern is None and (args.mapping is not None or args.unmapped != "error"):
        raise ConfigError("--mapping and --unmapped go with --by-pattern only")
    if args.random is None and (args.seed is not None or args.stratify is not None or args.sizes is not None):
        raise ConfigError("--seed, --stratify and --sizes go with --random only")
    if args.by_column is not None:
        return ByColumn(args.by_column)
    if args.by_pattern is not None:
        if args.mapping is None:
            raise ConfigError("--by-pattern needs --mapping FILE (a two-column CSV 'code,site')")
        return ByPattern(args.by_pattern, args.mapping, drop_unmapped=args.unmapped == "drop")
    sizes = tuple(args.sizes) if args.sizes is not None else None
    return RandomSplit(args.random, args.seed if args.seed is not None else 0, stratify=args.stratify, sizes=sizes)


def _partition(args: argparse.Namespace) -> int:
    rule = rule_from_args(args)
    report = partition_cohort(args.pooled_dir, args.out, rule, min_patients=args.min_patients,
                              small_sites=args.small_sites, schema_path=args.schema)
    record = report.record
    seed = f", seed {record['seed']}" if record["seed"] is not None else ""
    print(f"partition of {args.pooled_dir} ({record['pooled']['patients']} patients) into {args.out}: "
          f"{rule_mode(rule)}{seed}")
    for site in [*report.sites, *([report.external_test] if report.external_test else [])]:
        events = "".join(f", {n} events ({task})" for task, n in site.events.items())
        origin = f" from small sites {list(site.from_sites)}" if site.from_sites else ""
        print(f"  {site.name}: {site.patients} patients{events}{origin}")
    dropped = record["dropped_patients"]
    if dropped["total"]:
        print(f"  dropped: {dropped['total']} patients ({dropped['unmapped']} unmapped, "
              f"{dropped['small_sites']} of small sites)")
    for note in report.notes:
        print(f"  note: {note}")
    print(f"report: {args.out / REPORT_FILE}")
    return 0


def _fractions(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from exc
