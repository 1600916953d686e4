"""``fedfusion site approve HASH``: allow this site to run one Flower app (or every manifest-only fedfusion app).

The hash to approve is printed by the coordinator's `fedfusion study start`/`study hash` and, on refusal, in the
site's log. See fedfusion.deployment.site.app_approval for what an entry admits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fedfusion
from fedfusion.deployment.site.app_approval import APPROVED_APPS_FILE, approve


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``approve`` site command."""
    parser = subparsers.add_parser(
        "approve", help="approve a Flower app (by its SHA-256) for this site's daemon",
        description="Add ENTRY to STATE_DIR/approved-apps.txt: a FAB SHA-256, or fedfusion==VERSION to admit "
                    "apps that ship only a manifest naming the installed fedfusion (installed: "
                    f"{fedfusion.__version__}). The running daemon reads the file for every message.",
    )
    parser.add_argument("entry", metavar="ENTRY", help="a FAB SHA-256 (64 hex digits) or fedfusion==VERSION")
    parser.add_argument("--state-dir", type=Path, required=True, help="the site daemon's state folder")
    parser.add_argument("--note", default="", help="a comment kept beside the entry (e.g. the study name)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Add the entry; 0 whether it was new or already there."""
    path = args.state_dir / APPROVED_APPS_FILE
    added = approve(path, args.entry, args.note)
    print(f"{'approved' if added else 'already approved'}: {args.entry} ({path})")
    return 0
