"""``fedfusion site run --threads``: the environment given to the site's worker caps torch's compute threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fedfusion.deployment.processes import thread_limits
from fedfusion.errors import ConfigError


def torch_threads(env: dict[str, str]) -> int:
    """The intra-op thread count a fresh Python process's torch starts with under ``env``."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_the_worker_environment_caps_torch_threads() -> None:
    base = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    assert torch_threads({**base, **thread_limits(1)}) == 1
    assert thread_limits(None) == {}


def test_fewer_than_one_thread_is_refused() -> None:
    with pytest.raises(ConfigError, match="--threads must be at least 1, got 0"):
        thread_limits(0)
