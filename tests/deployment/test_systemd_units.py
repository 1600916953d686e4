"""The systemd units in deploy/ start commands the installed ``fedfusion`` accepts (with their env files' values)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fedfusion.cli import _build_parser

DEPLOY = Path(__file__).parents[2] / "deploy"


def _env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.mark.parametrize(("unit", "env_file"), [("fedfusion-site.service", "site.env"),
                                                ("fedfusion-coordinator.service", "coordinator.env")])
def test_unit_command_parses(unit: str, env_file: str) -> None:
    text = (DEPLOY / unit).read_text()
    command = re.search(r"^ExecStart=(.*?)(?<!\\)$", text, re.MULTILINE | re.DOTALL)
    assert command is not None
    env = {**_env(DEPLOY / "fedfusion.env"), **_env(DEPLOY / env_file)}
    words = shlex.split(command.group(1).replace("\\\n", " "))
    assert words[0].endswith("/fedfusion")
    args = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word) for word in words[1:]]
    parsed = _build_parser().parse_args(args)  # argparse exits (SystemExit) on an unknown option
    assert callable(parsed.handler)
