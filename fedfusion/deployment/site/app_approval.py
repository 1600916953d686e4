"""Which Flower apps (FABs) a site runs: the site admin's allow-list, checked before any app file is installed.

The allow-list is a text file (``approved-apps.txt`` in the site's state folder), one entry a line, ``#`` starts
a comment:

- a SHA-256 (64 hex digits) of a FAB: exactly that app, code and study config, may run;
- ``fedfusion==VERSION``: any FAB that ships **no file but its manifest** (``pyproject.toml``), names fedfusion's
  own ServerApp and ClientApp, and depends on ``fedfusion==VERSION``, where VERSION is the fedfusion installed
  at this site. Such an app can only run the code the site admin installed; its study config still passes the
  site's privacy policy. A FAB with any other file (a Python file could shadow the installed ``fedfusion``) needs
  its hash approved.

The hash is computed here from the FAB's bytes, not taken from the coordinator's claim.
"""

from __future__ import annotations

import hashlib
import io
import re
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import fedfusion
from fedfusion.atomic_io import atomic_write_text
from fedfusion.errors import AppNotApprovedError, ConfigError

APPROVED_APPS_FILE = "approved-apps.txt"
FEDFUSION_COMPONENTS = {"serverapp": "fedfusion.coordinator.server_app:app",
                        "clientapp": "fedfusion.site.client_app:app"}
_MANIFEST_FILES = frozenset({"pyproject.toml", ".info/CONTENT"})
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION_ENTRY = re.compile(r"fedfusion==([0-9A-Za-z.+-]+)")


@dataclass(frozen=True)
class AppApprovals:
    """A site's allow-list: approved FAB hashes and approved fedfusion versions (manifest-only apps)."""

    hashes: frozenset[str]
    fedfusion_versions: frozenset[str]
    source: Path

    def check(self, site: str, fab: bytes) -> str:
        """Return the FAB's SHA-256 if the site approved it; :class:`AppNotApprovedError` naming it otherwise."""
        fab_hash = hashlib.sha256(fab).hexdigest()
        if fab_hash in self.hashes:
            return fab_hash
        reason = self._manifest_only_refusal(fab)
        if reason is None:
            return fab_hash
        raise AppNotApprovedError(
            f"site {site} has not approved app sha256:{fab_hash} ({reason}); to approve it the site admin runs "
            f"`fedfusion site approve {fab_hash}`")

    def _manifest_only_refusal(self, fab: bytes) -> str | None:
        """None if a ``fedfusion==VERSION`` entry admits this FAB, else why not."""
        installed = fedfusion.__version__
        if installed not in self.fedfusion_versions:
            return f"its hash is not in the allow-list and fedfusion=={installed} is not approved"
        try:
            with zipfile.ZipFile(io.BytesIO(fab)) as archive:
                names = set(archive.namelist())
                extra = sorted(names - _MANIFEST_FILES)
                if extra:
                    return f"it ships files besides its manifest: {', '.join(extra[:5])}"
                manifest = tomllib.loads(archive.read("pyproject.toml").decode("utf-8"))
        except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            return f"it is not a readable Flower app archive ({type(exc).__name__})"
        components = manifest.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
        if components != FEDFUSION_COMPONENTS:
            return f"its components {components} are not fedfusion's"
        dependencies = manifest.get("project", {}).get("dependencies", [])
        if dependencies != [f"fedfusion=={installed}"]:
            return f"its dependencies {dependencies} are not exactly fedfusion=={installed}"
        return None


def load_approvals(path: Path) -> AppApprovals:
    """Read an allow-list file; a missing file approves nothing. Bad lines are a :class:`ConfigError`."""
    hashes: set[str] = set()
    versions: set[str] = set()
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for number, line in enumerate(lines, start=1):
        entry = line.split("#", 1)[0].strip().lower()
        if not entry:
            continue
        if _SHA256.fullmatch(entry.removeprefix("sha256:")):
            hashes.add(entry.removeprefix("sha256:"))
        elif match := _VERSION_ENTRY.fullmatch(entry):
            versions.add(match.group(1))
        else:
            raise ConfigError(f"{path}, line {number}: expected a SHA-256 (64 hex digits) or fedfusion==VERSION, "
                              f"got {line.strip()!r}")
    return AppApprovals(frozenset(hashes), frozenset(versions), path)


def approve(path: Path, entry: str, note: str = "") -> bool:
    """Add an entry (a FAB hash or ``fedfusion==VERSION``) to the allow-list; False if it was already there."""
    entry = entry.strip().lower().removeprefix("sha256:")
    version = _VERSION_ENTRY.fullmatch(entry)
    if not (_SHA256.fullmatch(entry) or version):
        raise ConfigError(f"cannot approve {entry!r}: expected a SHA-256 (64 hex digits) or fedfusion==VERSION")
    current = load_approvals(path)
    if entry in current.hashes or (version and version.group(1) in current.fedfusion_versions):
        return False
    old = path.read_text(encoding="utf-8") if path.is_file() else "# apps this site runs (fedfusion site approve)\n"
    if not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + entry + (f"  # {note}" if note else "") + "\n")
    return True
