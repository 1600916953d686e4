"""``fedfusion site check [DATA_DIR] [--bundle BUNDLE_DIR]``: validate a site for its admin, without training.

With DATA_DIR: per-modality counts, patients lacking a modality, and every error and warning (each naming the file
or patient); ``--json`` prints the same as JSON; ``--skip-bad`` reports what training with ``skip-bad`` would skip
as warnings; ``--slide-time-limit`` bounds the time one slide may take and ``--allow-non-brightfield`` accepts
dark-background (fluorescence) slides, as a study with ``allow-non-brightfield = true`` does; patients are counted
per split by the site's privacy policy (``--policy``, else the one beside the data). With ``--bundle``: the
site's certificates and key, the coordinator's reachability and the clock skew
(``fedfusion.deployment.site.connectivity``). Exit code 1 when there are errors, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedfusion.data.cohort_index import SCHEMA_FILE
from fedfusion.data.findings import Finding
from fedfusion.data.site_check import CHECK_SLIDE_SECONDS, SiteCheck, check_site
from fedfusion.data.slides.tiling import TilingParams
from fedfusion.deployment.site.connectivity import check_connection
from fedfusion.errors import ConfigError
from fedfusion.privacy.site_policy import POLICY_FILE_NAME, load_policy
from fedfusion.study.config import SYNTHETIC_SCHEMA_FILE, StudyConfig
from fedfusion.study.schema import load_schema

PATIENTS_SHOWN = 10


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``check`` site command."""
    parser = subparsers.add_parser(
        "check", help="validate this site's slides, omics and clinical tables (no training, nothing written)",
        description="Read manifest.csv, clinical.csv and the omics tables with the same validation as "
                    "training, open every slide and read one small region, and list every problem found. "
                    "Exit code 1 if there are errors.",
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", nargs="?", default=None,
                        help="the site folder (clinical.csv, and manifest.csv unless the study is clinical-only)")
    parser.add_argument("--bundle", type=Path, default=None, metavar="BUNDLE_DIR",
                        help="also check the site bundle: certificates, key, coordinator reachability, clock skew")
    parser.add_argument("--superlink", default=None, metavar="HOST:PORT",
                        help="with --bundle: check this coordinator address instead of site.toml's")
    parser.add_argument("--schema", type=Path, default=None, metavar="FILE",
                        help=f"the study schema (TOML) the data must fit (default: DATA_DIR/../{SCHEMA_FILE} if "
                             "present, else the synthetic cohort's, with a warning)")
    parser.add_argument("--fallback-mpp", type=float, default=None, metavar="X",
                        help="microns per pixel to assume for slides without resolution metadata")
    parser.add_argument("--target-mpp", type=float, default=StudyConfig.target_mpp, metavar="X",
                        help="the study's tile resolution; a slide scanned coarser cannot reach it "
                             "(default: %(default)s)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="report bad slides and unlabelled patients as skipped (warnings), as training with "
                             "node config skip-bad = true would")
    parser.add_argument("--allow-non-brightfield", action="store_true",
                        help="accept slides with a dark background (fluorescence, dark field), as a study with "
                             "allow-non-brightfield = true does (refused by default)")
    parser.add_argument("--slide-time-limit", type=float, default=CHECK_SLIDE_SECONDS, metavar="SECONDS",
                        help="most seconds one slide may take to check, 0 for no limit; progress lines go to "
                             "standard error on long reads (default: %(default)s)")
    parser.add_argument("--policy", type=Path, default=None, metavar="FILE",
                        help=f"the site's privacy policy, whose split (split-seed, test-fraction, use-split-column) "
                             f"and min-eval-patients the patient counts follow (default: DATA_DIR/{POLICY_FILE_NAME} "
                             "if present, else the built-in policy)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def slide_time_limit(seconds: float) -> float | None:
    """The ``--slide-time-limit`` value as a limit: None for 0 (no limit); a negative value is refused."""
    if not seconds >= 0:
        raise ConfigError(f"--slide-time-limit must be >= 0 seconds (0: no limit), got {seconds}")
    return seconds or None


def run(args: argparse.Namespace) -> int:
    """Check the site and print the result; 1 if there are errors, else 0."""
    if args.data_dir is None and args.bundle is None:
        raise ConfigError("give DATA_DIR, --bundle BUNDLE_DIR or both")
    ok = True
    if args.bundle is not None:
        ok = _check_bundle(args.bundle, args.superlink)
    if args.data_dir is not None:
        ok = _check_data(args) and ok
    return 0 if ok else 1


def _check_bundle(bundle_dir: Path, superlink: str | None) -> bool:
    result = check_connection(bundle_dir, superlink)
    lines = [f"site bundle {bundle_dir}:", *(f"  {fact}" for fact in result.facts)]
    lines += _section("errors", result.findings.errors) + _section("warnings", result.findings.warnings)
    lines.append(f"{'FAILED' if result.findings.errors else 'OK'}: {len(result.findings.errors)} errors, "
                 f"{len(result.findings.warnings)} warnings")
    print("\n".join(lines))
    return not result.findings.errors


def _check_data(args: argparse.Namespace) -> bool:
    beside = args.data_dir.parent / SCHEMA_FILE
    schema_file = args.schema or (beside if beside.is_file() else SYNTHETIC_SCHEMA_FILE)
    schema = load_schema(schema_file)
    params = TilingParams.from_study(StudyConfig(target_mpp=args.target_mpp,
                                                 allow_non_brightfield=args.allow_non_brightfield))
    beside_data = args.data_dir / POLICY_FILE_NAME
    policy = load_policy(args.policy or (beside_data if beside_data.is_file() else None))
    result = check_site(args.data_dir, schema, args.fallback_mpp, params=params, skip_bad=args.skip_bad,
                        slide_seconds=slide_time_limit(args.slide_time_limit), split=policy.split,
                        min_eval_patients=policy.min_eval_patients)
    if schema_file == SYNTHETIC_SCHEMA_FILE:
        result.findings.warning("study schema", f"none given and {beside} is absent: checked against the synthetic "
                                                "cohort's schema (pass --schema with your study's)")
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_report(result))
    return bool(result.ok)


def format_report(result: SiteCheck) -> str:
    """The readable summary a site admin sees."""
    lines = [f"site {result.site_dir}: {len(result.patients)} patients",
             "  with " + ", ".join(f"{m} {result.count(m)}" for m in result.lacking),
             f"  slides: {result.slides_checked} checked, {result.slides_unreadable} unusable"]
    for modality in result.lacking:
        lacking = result.lacking[modality]
        if lacking:
            more = f" (+{len(lacking) - PATIENTS_SHOWN} more)" if len(lacking) > PATIENTS_SHOWN else ""
            outcome = "unusable: no valid clinical row" if modality == "clinical" else "kept, modality masked"
            lines.append(f"  without {modality} ({outcome}): {', '.join(lacking[:PATIENTS_SHOWN])}{more}")
    lines += _section("errors", result.findings.errors) + _section("warnings", result.findings.warnings)
    lines.append(f"{'FAILED' if result.findings.errors else 'OK'}: {len(result.findings.errors)} errors, "
                 f"{len(result.findings.warnings)} warnings")
    return "\n".join(lines)


def _section(title: str, findings: list[Finding]) -> list[str]:
    return [f"{title}:", *(f"  - {f}" for f in findings)] if findings else []
