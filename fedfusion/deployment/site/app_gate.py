"""The site's ClientApp process: Flower's ``flwr-clientapp`` with the site's app approval in front.

Started by the site's SuperExec (``fedfusion.deployment.site.site_exec``) for every message, in place of
``flwr-clientapp``. It runs Flower's own ClientApp process function, with one change: before the FAB is unpacked
(``install_from_fab``, the first step that writes any app file, long before any app code is imported), its
SHA-256 is computed from its bytes and checked against the site's allow-list. An unapproved app is never
installed or imported; the coordinator gets an error reply naming the hash, the site's log the same line and how
to approve it, and the process exits with Flower's task-failure code.
Flower's ClientApp process and the installer swap come from the seam (``fedfusion.flower_compat``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedfusion.deployment.site.app_approval import AppApprovals, load_approvals
from fedfusion.errors import AppNotApprovedError
from fedfusion.flower_compat import run_clientapp_with_installer

logger = logging.getLogger("fedfusion.site")


def gated_installer(approvals: AppApprovals, site: str, install: Callable[..., Path]) -> Callable[..., Path]:
    """Wrap Flower's ``install_from_fab`` so that only an approved FAB is installed."""

    def install_if_approved(fab_file: Path | bytes, *args: Any, **kwargs: Any) -> Path:
        fab = fab_file.read_bytes() if isinstance(fab_file, Path) else fab_file
        try:
            fab_hash = approvals.check(site, fab)
        except AppNotApprovedError as exc:
            logger.error("REFUSED: %s (allow-list %s)", exc, approvals.source)
            raise
        logger.info("site %s: app sha256:%s is approved", site, fab_hash)
        return install(fab_file, *args, **kwargs)

    return install_if_approved


def main(argv: Sequence[str] | None = None) -> None:
    """Run one ClientApp task for the site's SuperExec."""
    parser = argparse.ArgumentParser(description="fedfusion's gated flwr-clientapp (started by the site daemon)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--approved-apps", type=Path, required=True)
    parser.add_argument("--site-name", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    approvals = load_approvals(args.approved_apps)
    run_clientapp_with_installer(lambda install: gated_installer(approvals, args.site_name, install),
                                 runtime_api_address=args.runtime_api_address, token=args.token,
                                 parent_pid=args.parent_pid)


if __name__ == "__main__":
    main(sys.argv[1:])
